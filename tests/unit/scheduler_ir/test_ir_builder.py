"""IRBuilder: exact nodes per decision item; bad decisions raise naming the request."""

import pytest

from conftest import state, view
from sagellm.scheduler_ir import IRBuilder, StepDecision


def ids(g):
    return [n.node_id for n in g.nodes]


def test_prefill_and_decode_nodes_and_edges():
    st = state([view("a", prompt=5), view("b", prompt=3, computed=3, output=1)])
    g = IRBuilder().build(StepDecision((("a", 5), ("b", 1))), st)
    assert ids(g) == [
        "prefill/a@0",
        "kv_store/a@0",
        "sample/a",
        "decode/b@3",
        "kv_store/b@3",
        "sample/b",
    ]  # b's KV is resident (running): no kv_load
    assert g.node("decode/b@3").inputs == ("tokens:b@3", "kv:b@3")
    assert g.node("kv_store/b@3").outputs == ("kv:b@4",)
    assert dict(g.node("prefill/a@0").config) == {
        "request_id": "a",
        "start_tokens": 0,
        "num_tokens": 5,
    }


def test_partial_prefill_chunk_has_no_sample_and_chunking_chains_kv():
    st = state([view("a", prompt=10)])
    g = IRBuilder().build(StepDecision((("a", 6),)), st)
    assert ids(g) == ["prefill/a@0", "kv_store/a@0"]
    g = IRBuilder(prefill_chunk_tokens=4).build(StepDecision((("a", 10),)), st)
    assert ids(g) == [
        "prefill/a@0", "kv_store/a@0",
        "prefill/a@4", "kv_store/a@4",
        "prefill/a@8", "kv_store/a@8", "sample/a",
    ]  # fmt: skip
    assert g.node("prefill/a@4").inputs == ("tokens:a@4", "kv:a@4")  # the first chunk's store


def test_waiting_request_with_a_cache_hit_loads_then_computes_the_rest():
    st = state([view("a", prompt=10, num_prefix_hit_tokens=8, num_lower_tier_hit_tokens=4)])
    g = IRBuilder().build(StepDecision((("a", 2),)), st)
    assert ids(g) == ["kv_load/a@8", "prefill/a@8", "kv_store/a@8", "sample/a"]
    load = g.node("kv_load/a@8")
    assert load.get("num_tokens") == 8 and load.get("lower_tier_tokens") == 4
    assert load.get("overlap") is False and load.outputs == ("kv:a@8",)
    # overlapped: only the load this step (its tiers are read during this step's forward)
    g = IRBuilder(overlap_tier_loads=True).build(StepDecision((("a", 2),)), st)
    assert ids(g) == ["kv_load/a@8"] and g.node("kv_load/a@8").get("overlap") is True


def test_tp_adds_two_all_reduces_per_layer_and_verify_for_drafts():
    st = state([view("a", prompt=2, computed=2, output=1)], tp_size=2, num_layers=2,
               hidden_bytes_per_token=128)  # fmt: skip
    g = IRBuilder().build(StepDecision((("a", 1),)), st, num_draft_tokens={"a": 3})
    ars = g.of_type("all_reduce")
    assert [n.node_id for n in ars] == [
        "all_reduce/a@2:L0.attn", "all_reduce/a@2:L0.mlp",
        "all_reduce/a@2:L1.attn", "all_reduce/a@2:L1.mlp",
    ]  # fmt: skip
    assert {n.get("bytes") for n in ars} == {128}
    verify = g.node("verify/a@2")
    assert verify.get("num_tokens") == 4
    assert "reduced:a@2:L1.mlp" in g.node("sample/a").inputs


def test_preempted_request_restarts_at_zero():
    st = state([view("a", prompt=4, computed=4, output=2)])
    g = IRBuilder().build(StepDecision((("a", 6),), preempt=("a",)), st)
    assert ids(g)[0] == "prefill/a@0" and g.preempt == ("a",)


@pytest.mark.parametrize(
    "decision, match",
    [
        (StepDecision((("zz", 1),)), "unknown request 'zz'"),
        (StepDecision((("a", 9),)), r"request 'a': num_tokens 9 not in \[1, 8\]"),
        (StepDecision((("a", 0),)), r"num_tokens 0 not in"),
        (StepDecision(preempt=("q",)), "preempt names unknown request 'q'"),
    ],
)
def test_bad_decisions(decision, match):
    with pytest.raises(ValueError, match=match):
        IRBuilder().build(decision, state([view("a", prompt=8)]))
    with pytest.raises(ValueError, match="prefill_chunk_tokens"):
        IRBuilder(prefill_chunk_tokens=0)
