"""Strategies on hand-made states: exact decisions, preemption rules, unknown names."""

import pytest

from conftest import state, view
from sagellm.scheduler_ir import make_strategy
from sagellm.scheduler_ir.strategies import ServiceTimeModel, SloAwareStrategy, fill_budget


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        make_strategy("round_robin")
    msg = str(err.value)
    assert "unknown strategy 'round_robin'" in msg
    for name in ("adaptive", "aegaeon", "fifo", "hybrid", "lpm", "priority", "slo_aware"):
        assert name in msg


def test_fifo_runs_running_first_then_admits_in_arrival_order_under_the_budget():
    s = state(
        [
            view("late", prompt=6, arrival_s=3.0),
            view("dec", prompt=4, computed=4, output=1, arrival_s=2.0),
            view("early", prompt=10, arrival_s=1.0),
        ],
        budget=8,
    )
    d = make_strategy("fifo").decide(s)
    assert d.items == (("dec", 1), ("early", 7)) and d.preempt == ()


def test_fill_budget_back_pressure_and_growth_preemption_of_the_lowest_ranked():
    # 2 free blocks of 4 tokens; "a" (decode at a block boundary) needs a new block
    a = view("a", prompt=8, computed=8, output=0, blocks=2, arrival_s=0.0)
    b = view("b", prompt=8, computed=8, output=0, blocks=2, arrival_s=1.0)
    w = view("w", prompt=12, arrival_s=2.0)
    a2 = view("a", prompt=8, computed=8, output=1, blocks=2, arrival_s=0.0)
    b2 = view("b", prompt=8, computed=8, output=1, blocks=2, arrival_s=1.0)
    d = make_strategy("fifo").decide(state([a2, b2, w], free=2))
    # a and b each grow by one block; w (3 blocks) cannot be admitted and waits
    assert d.items == (("a", 1), ("b", 1)) and d.preempt == ()
    d = make_strategy("fifo").decide(state([a2, b2, w], free=1))
    # a takes the last block; b must grow: nobody ranks below it, so b itself is preempted
    assert d.items == (("a", 1),) and d.preempt == ("b",)
    d = fill_budget(state([a, b], free=0), [a, b], lambda v, r: r.running)
    assert d.items == () and d.preempt == ()  # nothing pending: nothing to run


def test_priority_preempts_lower_priority_and_the_victim_keeps_its_priority():
    low = view("low", prompt=8, computed=8, output=1, blocks=3, priority=0, arrival_s=0.0)
    high = view("high", prompt=8, priority=5, arrival_s=1.0)
    s = state([low, high], free=0)
    d = make_strategy("priority").decide(s)
    assert d.preempt == ("low",) and d.items == (("high", 8),)
    # fifo never lets a waiting request evict a running one
    assert make_strategy("fifo").decide(s).items == (("low", 1),)
    # after preemption "low" waits with its priority intact; a priority-0 newcomer that
    # arrived later ranks behind it, a priority-1 one ahead of it
    low_w = view("low", prompt=8, output=1, priority=0, arrival_s=0.0, num_preemptions=1)
    s = state(
        [
            view("high", prompt=8, computed=8, output=1, blocks=3, priority=5, arrival_s=1.0),
            low_w,
            view("new0", prompt=4, priority=0, arrival_s=2.0),
            view("new1", prompt=4, priority=1, arrival_s=3.0),
        ],
        free=100,
    )
    assert [r for r, _ in make_strategy("priority").decide(s).items] == [
        "high",
        "new1",
        "low",
        "new0",
    ]


def test_slo_aware_orders_by_slack_and_demotes_missed_ttft():
    model = ServiceTimeModel(prefill_token_s=0.01, decode_step_s=0.05)
    strat = SloAwareStrategy(model)
    s = state(
        [
            # slack = 1.0 + 2.0 - 2.5 - 0.8 = -0.3 but deadline not passed yet
            view("tight", prompt=80, ttft_slo_s=2.0, arrival_s=1.0),
            # deadline 0.5 < now 2.5: TTFT already missed -> last among SLO requests
            view("missed", prompt=4, ttft_slo_s=0.5, arrival_s=0.0),
            # decoding: next token due at 2.0 + 0.2 * 3 = 2.6; slack 2.6 - 2.5 - 0.05 = 0.05
            view(
                "dec",
                prompt=4,
                computed=4,
                output=3,
                ttft_slo_s=5.0,
                tpot_slo_s=0.2,
                first_token_s=2.0,
                arrival_s=0.5,
            ),
            view("none", prompt=4, arrival_s=0.1),  # no objective: +inf slack
        ],
        now=2.5,
    )
    assert [r.request_id for r in strat.rank(s)] == ["tight", "dec", "none", "missed"]
    strat.observe(num_prefill_tokens=0, num_decode_tokens=4, step_s=0.25)
    assert model.decode_step_s == pytest.approx(0.05 + 0.2 * (0.25 - 0.05))


def test_lpm_and_hybrid_order_by_cached_prefix_inside_slo_classes():
    views = [
        view("a", prompt=8, num_prefix_hit_tokens=0, arrival_s=0.0, ttft_slo_s=1.0),
        view("b", prompt=8, num_prefix_hit_tokens=8, arrival_s=1.0, ttft_slo_s=5.0),
        view("c", prompt=8, num_prefix_hit_tokens=4, arrival_s=2.0, ttft_slo_s=1.0),
        view("r", prompt=4, computed=4, output=1, arrival_s=3.0, ttft_slo_s=5.0),
    ]
    s = state(views)
    assert [r.request_id for r in make_strategy("lpm").rank(s)] == ["r", "b", "c", "a"]
    # hybrid: the 1 s class first (c has the longer cached prefix), then the 5 s class
    assert [r.request_id for r in make_strategy("hybrid").rank(s)] == ["c", "a", "r", "b"]


def test_adaptive_switches_with_hysteresis_and_dwell():
    strat = make_strategy("adaptive", enter_queue=3, exit_queue=1, min_dwell_steps=2)
    busy = state([view(f"w{i}", prompt=4, arrival_s=float(i)) for i in range(4)])
    calm = state([view("w0", prompt=4)])
    mid = state([view(f"w{i}", prompt=4) for i in range(2)])
    modes = []
    for i, s in enumerate([busy, busy, busy, mid, mid, mid, calm, calm, busy]):
        modes.append(strat.decide(s.__class__(**{**s.__dict__, "step_index": i})).note)
    assert modes == [
        "adaptive:light",  # dwell 1 < 2
        "adaptive:heavy",  # q=4 >= 3
        "adaptive:heavy",
        "adaptive:heavy",  # q=2: between the thresholds, stays
        "adaptive:heavy",
        "adaptive:heavy",
        "adaptive:light",  # q=1 <= 1
        "adaptive:light",
        "adaptive:heavy",
    ]
    assert strat.switches == [(1, "heavy"), (6, "light"), (8, "heavy")]
    with pytest.raises(ValueError, match="hysteresis"):
        make_strategy("adaptive", enter_queue=1, exit_queue=2)
