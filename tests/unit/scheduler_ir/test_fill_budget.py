"""fill_budget (through the fifo strategy, the engine's default) on tiny limits, with exact
expectations: chunking, decode-first, no-chunk waits, back-pressure, preemption, quotas and
cache hits (no model involved)."""

from sagellm.scheduler_ir.strategies import FifoStrategy

fifo = FifoStrategy()


def test_chunked_prefill_splits_under_budget(mk):
    d = fifo.decide(mk.state([mk.view("a", prompt=10)], budget=6))
    assert d.items == (("a", 6),)
    d = fifo.decide(mk.state([mk.view("a", prompt=10, computed=6)], budget=6))
    assert d.items == (("a", 4),)


def test_decodes_first_then_new_prefills_share_budget(mk):
    a = mk.view("a", prompt=3, computed=3, output=1)
    b = mk.view("b", prompt=20, arrival_s=1.0)
    assert fifo.decide(mk.state([a, b], budget=8)).items == (("a", 1), ("b", 7))


def test_no_chunking_waits_for_whole_prompt_budget(mk):
    a, b = mk.view("a", prompt=3), mk.view("b", prompt=6, arrival_s=1.0)
    d = fifo.decide(mk.state([a, b], budget=8, chunked_prefill=False))
    assert d.items == (("a", 3),)


def test_back_pressure_closes_admission(mk):
    a, b = mk.view("a", prompt=10), mk.view("b", prompt=4, arrival_s=1.0)
    c = mk.view("c", prompt=2, arrival_s=2.0)  # would fit, but may not overtake b
    d = fifo.decide(mk.state([a, b, c], free=3, budget=32))
    assert d.items == (("a", 10),)


def test_preempts_latest_running_then_admits_nothing(mk):
    a = mk.view("a", prompt=8, computed=8, output=1)  # 9th token needs a 3rd block
    b = mk.view("b", prompt=8, computed=8, output=1, arrival_s=1.0)
    w = mk.view("w", prompt=2, arrival_s=2.0)
    d = fifo.decide(mk.state([a, b, w], free=0, budget=32))
    assert d.items == (("a", 1),) and d.preempt == ("b",)


def test_quota_holds_only_its_tenant(mk):
    a = mk.view("a", prompt=8, tenant_id="t")
    b = mk.view("b", prompt=8, tenant_id="u", arrival_s=1.0)
    d = fifo.decide(mk.state([a, b], tenant_free_blocks=(("t", 1),)))
    assert d.items == (("b", 8),)


def test_quota_preempts_same_tenant_only(mk):
    a = mk.view("a", prompt=8, computed=8, output=1, tenant_id="t")
    x = mk.view("x", prompt=8, computed=8, output=1, tenant_id="u", arrival_s=1.0)
    b = mk.view("b", prompt=8, computed=8, output=1, tenant_id="t", arrival_s=2.0)
    d = fifo.decide(mk.state([a, x, b], tenant_free_blocks=(("t", 0),)))
    assert d.preempt == ("b",) and d.items == (("a", 1), ("x", 1))


def test_waiting_request_starts_after_its_cache_hit(mk):
    a = mk.view("a", prompt=10, num_prefix_hit_tokens=8)
    d = fifo.decide(mk.state([a], free=3))  # 3 blocks hold hit (2) + the rest (1)
    assert d.items == (("a", 2),)
    assert fifo.decide(mk.state([a], free=2)).items == ()


def test_hit_blocks_running_requests_hold_take_no_free_block(mk):
    run = mk.view("a", prompt=12, computed=12, output=1)  # holds the 2-block prefix (and more)
    w = mk.view("w", prompt=10, num_prefix_hit_tokens=8, num_shared_hit_blocks=2, arrival_s=1.0)
    # a's decode takes its 4th block; w needs 3 blocks, 2 of them shared: 1 free one
    assert fifo.decide(mk.state([run, w], free=2)).items == (("a", 1), ("w", 2))
    assert fifo.decide(mk.state([run, w], free=1)).items == (("a", 1),)
    # the tenant's quota is charged for all 3
    st = mk.state([run, w], free=2, tenant_free_blocks=(("default", 3),))
    assert fifo.decide(st).items == (("a", 1),)
