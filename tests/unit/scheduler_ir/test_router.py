"""Router policies with exact choices."""

import pytest

from conftest import state, view
from sagellm.core.types import Request
from sagellm.scheduler_ir.router import Router


def req(rid, tokens):
    return Request(rid, list(tokens))


def test_round_robin_cycles():
    r = Router(["a", "b", "c"], "round_robin")
    assert [r.route(req(str(i), [1])) for i in range(4)] == ["a", "b", "c", "a"]


def test_least_loaded_counts_outstanding_tokens():
    r = Router(["a", "b"], "least_loaded")
    states = {
        "a": state([view("x", prompt=10, max_tokens=4)]),  # 10 pending + 4 to generate
        "b": state([view("y", prompt=4, computed=4, output=1, max_tokens=8)] * 2),  # 2*(1+7)
    }
    assert r.route(req("n", [1]), states) == "a"  # 14 < 16
    assert r.route(req("m", [1]), {"a": state([]), "b": state([])}) == "a"  # tie -> order


def test_prefix_affinity_follows_the_longest_cached_prefix():
    r = Router(["a", "b"], "prefix_affinity", block_size_tokens=4)
    shared = list(range(8))
    empty = {"a": state([]), "b": state([])}
    assert r.route(req("1", [*shared, 50, 51, 52, 53]), empty) == "a"  # no match: least loaded
    busy_a = {"a": state([view("x", prompt=30)]), "b": state([])}
    assert r.route(req("2", [9] * 12), busy_a) == "b"  # no match: b is lighter
    # 8 shared tokens (2 blocks) live on a; b has none of them even though a is busier
    assert r.route(req("3", [*shared, 7, 7, 7, 7]), busy_a) == "a"
    assert r.matched_tokens("a", [*shared, 50, 51, 52, 53, 1]) == 12
    assert r.matched_tokens("b", [9] * 8) == 8
    probe = Router(["a", "b"], "prefix_affinity", prefix_probe=lambda i, t: 16 if i == "b" else 0)
    assert probe.route(req("4", shared), empty) == "b"


def test_bad_router_configs():
    with pytest.raises(ValueError, match="unknown routing policy 'random'; known: round_robin"):
        Router(["a"], "random")
    with pytest.raises(ValueError, match="non-empty and unique"):
        Router(["a", "a"])
