"""IRGraph: topological order, cycle detection naming the cycle, construction errors."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm.scheduler_ir import IRCycleError, IRGraph, IRNode


def n(nid, ins=(), outs=(), typ="prefill"):
    return IRNode(nid, typ, tuple(ins), tuple(outs))


def test_topological_order_respects_values_and_keeps_insertion_ties():
    g = IRGraph(
        (
            n("sample", ["h"], ["tok"], "sample"),
            n("load", ["kv0"], ["ctx"], "kv_load"),
            n("fwd", ["ctx", "ids"], ["h", "kvn"]),
            n("store", ["kvn"], ["kv1"], "kv_store"),
        )
    )
    assert [x.node_id for x in g.topological_order()] == ["load", "fwd", "sample", "store"]
    assert g.deps() == {"sample": ["fwd"], "load": [], "fwd": ["load"], "store": ["fwd"]}


def test_cycle_error_names_the_cycle_in_dataflow_order():
    g = IRGraph((n("a", ["z"], ["x"]), n("b", ["x"], ["y"]), n("c", ["y"], ["z"]), n("d")))
    cyc = g.find_cycle()
    assert cyc is not None and cyc[0] == cyc[-1] and sorted(cyc[:-1]) == ["a", "b", "c"]
    # each node's output feeds the next one
    for u, v in itertools.pairwise(cyc):
        assert set(g.node(u).outputs) & set(g.node(v).inputs)
    with pytest.raises(IRCycleError, match=r"cycle: (a|b|c) -> .* -> \1"):
        g.topological_order()


def test_two_producers_duplicate_ids_self_loops_and_bad_types_are_rejected():
    with pytest.raises(ValueError, match="output by both"):
        IRGraph((n("a", [], ["x"]), n("b", [], ["x"])))
    with pytest.raises(ValueError, match="appears twice"):
        IRGraph((n("a"), n("a")))
    with pytest.raises(ValueError, match="inputs a value it outputs"):
        n("a", ["x"], ["x"])
    with pytest.raises(ValueError, match="node_type 'matmul' is not one of kv_load, prefill"):
        IRNode("a", "matmul")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), max_size=30))
def test_order_is_topological_or_a_real_cycle_is_named(edges):
    """Random graphs: either every edge points forward in the order, or the named cycle is
    a real cycle of the graph."""
    ins = {i: [] for i in range(12)}
    for a, b in edges:
        ins[b].append(f"v{a}")  # node a outputs v{a}; b reads it
    g = IRGraph(tuple(n(f"n{i}", sorted(set(ins[i]) - {f"v{i}"}), [f"v{i}"]) for i in range(12)))
    try:
        order = [x.node_id for x in g.topological_order()]
    except IRCycleError as err:
        cyc = err.cycle
        assert cyc[0] == cyc[-1]
        for u, v in itertools.pairwise(cyc):
            assert f"v{u[1:]}" in g.node(v).inputs
        return
    pos = {nid: i for i, nid in enumerate(order)}
    assert len(order) == 12
    for a, b in edges:
        if a != b:
            assert pos[f"n{a}"] < pos[f"n{b}"]
