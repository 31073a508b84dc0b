"""IROptimizer: fusion, chunk merging under the budget, all-reduce buckets, kv_load hoisting."""

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import state, view
from sagellm.scheduler_ir import IRBuilder, IRGraph, IRNode, IROptimizer, StepDecision, lower


def test_all_forwards_fuse_into_one_batched_forward_in_decision_order():
    s = state(
        [
            view("a", prompt=5, num_prefix_hit_tokens=4),
            view("b", prompt=3, computed=3, output=1),
            view("c", 2),
        ]
    )
    g = IRBuilder().build(StepDecision((("b", 1), ("a", 1), ("c", 2))), s)
    opt = IROptimizer(64).optimize(g)
    types = [n.node_type for n in opt.nodes]
    assert types == ["kv_load", "forward", "kv_store", "sample"]
    fwd = opt.node("forward/0")
    assert fwd.get("items") == (
        ("b", 3, 1, "decode"),
        ("a", 4, 1, "prefill"),
        ("c", 0, 2, "prefill"),
    )
    assert opt.node("sample/0").get("request_ids") == ("b", "a", "c")
    assert opt.nodes[0].get("hoisted") is True  # kv_load of a reads only cached KV
    assert [[(i.request_id, i.start_tokens, i.num_tokens) for i in w] for w in lower(opt)] == [
        [("b", 3, 1), ("a", 4, 1), ("c", 0, 2)]
    ]


def test_chunked_prefills_merge_while_the_sum_fits_the_budget():
    s = state([view("a", prompt=10), view("b", prompt=3)])
    g = IRBuilder(prefill_chunk_tokens=3).build(StepDecision((("a", 10), ("b", 3))), s)
    assert len(g.of_type("prefill")) == 5  # a: 3+3+3+1, b: 3
    opt = IROptimizer(max_num_batched_tokens=7).optimize(g)
    # a's chunks 3+3 merge (6 <= 7); 3+1 merge into a second wave, which reads the first's KV
    waves = [[(i.request_id, i.start_tokens, i.num_tokens) for i in w] for w in lower(opt)]
    assert waves == [[("a", 0, 6), ("b", 0, 3)], [("a", 6, 4)]]
    assert opt.of_type("kv_load") == []  # the second wave reads the first's kv_store output
    unlimited = IROptimizer(None).optimize(g)
    assert [len(w) for w in lower(unlimited)] == [2]
    assert lower(unlimited)[0][0].num_tokens == 10


def test_small_all_reduces_bucket_per_layer_part_and_large_ones_stay():
    s = state([view("a", prompt=4), view("b", prompt=2), view("c", prompt=1)], tp_size=2,
              num_layers=2, hidden_bytes_per_token=100)  # fmt: skip
    g = IRBuilder().build(StepDecision((("a", 4), ("b", 2), ("c", 1))), s)
    assert len(g.of_type("all_reduce")) == 12  # 3 requests x 2 layers x 2
    opt = IROptimizer(64, small_all_reduce_bytes=300, bucket_bytes=800).optimize(g)
    ars = opt.of_type("all_reduce")
    # a's are 400 B (not small); b (200 B) and c (100 B) share one bucket per layer and part,
    # never across layers (layer 1 needs layer 0's sum first)
    assert sorted((n.get("bytes"), n.get("num_fused")) for n in ars) == [
        (300, 2), (300, 2), (300, 2), (300, 2), (400, None), (400, None), (400, None), (400, None)
    ]  # fmt: skip
    buckets = [n for n in ars if n.get("num_fused")]
    assert sorted((n.get("layer"), n.get("part")) for n in buckets) == [
        (0, "attn"), (0, "mlp"), (1, "attn"), (1, "mlp")
    ]  # fmt: skip
    opt.topological_order()  # still acyclic


def test_unrelated_nodes_survive_and_fusion_keeps_graph_outputs():
    g = IRGraph((IRNode("x", "kv_transfer", ("kv:a@4",), ("kv@dst",)),))
    assert IROptimizer().optimize(g).nodes == g.nodes


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 12), st.integers(0, 12)), min_size=1, max_size=6),
    st.integers(1, 5),
    st.integers(1, 20),
)
def test_optimized_graph_is_acyclic_and_covers_the_same_tokens(reqs, chunk, budget):
    views = [view(f"r{i}", prompt=p, computed=min(c, p - 1)) for i, (p, c) in enumerate(reqs)]
    s = state(views)
    items = tuple((v.request_id, v.num_pending_tokens) for v in views)
    g = IRBuilder(prefill_chunk_tokens=chunk).build(StepDecision(items), s)
    opt = IROptimizer(budget).optimize(g)
    assert opt.find_cycle() is None
    per_req: dict[str, list[tuple[int, int]]] = {}
    for wave in lower(opt):
        assert len({i.request_id for i in wave}) == len(wave)
        for i in wave:
            per_req.setdefault(i.request_id, []).append((i.start_tokens, i.num_tokens))
    for v in views:
        spans = per_req[v.request_id]
        assert spans[0][0] == v.num_computed_tokens
        assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(spans))
        assert sum(n for _, n in spans) == v.num_pending_tokens
    samples = opt.of_type("sample")
    assert len(samples) <= len(lower(opt))  # at most one fused sample per wave
    sampled = [r for n in samples for r in (n.get("request_ids") or (n.get("request_id"),))]
    assert sorted(sampled) == sorted(v.request_id for v in views)
