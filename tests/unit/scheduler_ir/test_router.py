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


def test_prefix_affinity_asks_the_engines_caches():
    cached = {"a": 8, "b": 0}  # what each instance's prefix index holds for the prompt
    r = Router(["a", "b"], "prefix_affinity", prefix_probe=lambda i, req: cached[i])
    empty = {"a": state([]), "b": state([])}
    busy_a = {"a": state([view("x", prompt=30)]), "b": state([])}
    assert r.route(req("1", [1] * 12), busy_a) == "a"  # a holds 8 tokens though busier
    cached["a"] = 0
    assert r.route(req("2", [1] * 12), busy_a) == "b"  # no match anywhere: least loaded
    assert r.route(req("3", [1] * 12), empty) == "a"  # tie: instance order
    with pytest.raises(ValueError, match="needs prefix_probe"):
        Router(["a"], "prefix_affinity").route(req("4", [1]), empty)


def test_bad_router_configs():
    with pytest.raises(ValueError, match="unknown routing policy 'random'; known: round_robin"):
        Router(["a"], "random")
    with pytest.raises(ValueError, match="non-empty and unique"):
        Router(["a", "a"])
