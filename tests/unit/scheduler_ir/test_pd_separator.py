"""PDSeparator boundaries: 1-token prompt, prompt of exactly one block, max_tokens 1."""

import pytest

import sagellm.scheduler_ir
from conftest import view
from sagellm.scheduler_ir import PDSeparator


def test_boundaries_and_node_placement():
    sep = PDSeparator(["p0"], ["d0"], block_size_tokens=4)
    split = sep.split(
        [
            view("one", prompt=1, max_tokens=5),
            view("block", prompt=4, max_tokens=5),
            view("five", prompt=5, max_tokens=5),
            view("single", prompt=9, max_tokens=1),
        ]
    )
    a = {x.request_id: x for x in split.assignments}
    assert (a["one"].num_transfer_blocks, a["block"].num_transfer_blocks) == (1, 1)
    assert a["five"].num_transfer_blocks == 2
    assert a["single"].decode_instance_id is None and a["single"].num_transfer_blocks == 0
    transfers = {n.get("request_id"): n for n in split.transfers()}
    assert sorted(transfers) == ["block", "five", "one"]
    t = transfers["block"]
    assert (t.get("src"), t.get("dst"), t.get("num_tokens"), t.get("num_blocks")) == (
        "p0", "d0", 4, 1
    )  # fmt: skip
    g = split.graph
    order = [n.node_id for n in g.topological_order()]
    assert order.index("prefill/block@0") < order.index("kv_transfer/block")
    assert order.index("kv_transfer/block") < order.index("decode/block@4")
    assert g.node("decode/block@4").device == "d0" and g.node("prefill/block@0").device == "p0"
    assert g.node("decode/block@4").get("start_tokens") == 4
    assert [n.node_id for n in g.nodes if n.get("request_id") == "single"] == [
        "prefill/single@0",
        "kv_store/single@0",
        "sample/single@0",
    ]


def test_round_robin_over_instances_and_bad_configs():
    sep = PDSeparator(["p0", "p1"], ["d0"], block_size_tokens=4)
    split = sep.split([view(f"r{i}", prompt=3) for i in range(3)])
    assert [x.prefill_instance_id for x in split.assignments] == ["p0", "p1", "p0"]
    with pytest.raises(ValueError, match="both a prefill and a decode"):
        PDSeparator(["a"], ["a"], 4)
    with pytest.raises(ValueError, match="non-empty"):
        PDSeparator([], ["a"], 4)
    with pytest.raises(ValueError, match="block_size_tokens must be >= 1"):
        PDSeparator(["a"], ["b"], 0)


def test_pd_separator_is_a_public_name_of_the_package():
    assert {"PDSeparator", "PDSplit", "PDAssignment"} <= set(sagellm.scheduler_ir.__all__)
    assert all(hasattr(sagellm.scheduler_ir, n) for n in sagellm.scheduler_ir.__all__)
