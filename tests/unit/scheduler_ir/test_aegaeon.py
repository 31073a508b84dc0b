"""Aegaeon (SOSP'25) quotas against hand-computed values, and its prefill/decode turns."""

import pytest

from conftest import state, view
from sagellm.scheduler_ir.strategies import AegaeonStrategy, aegaeon_quotas


def test_quotas_when_the_switch_term_dominates():
    # n = 0.1/0.02 = 5, 0.1/0.05 = 2; S = 1/5 + 1/2 = 0.7
    # alpha = max(0.4 / (2 * 4) + 0.7, 0.5) = 0.75; alpha - S = 0.05
    q = aegaeon_quotas(0.1, {"m0": 0.02, "m1": 0.05}, c0_s=0.4)
    assert q == pytest.approx({"m0": 0.4 / (5 * 0.05), "m1": 0.4 / (2 * 0.05)})
    assert q == pytest.approx({"m0": 1.6, "m1": 4.0})


def test_quotas_when_alpha_is_the_half_floor():
    # n = 10 for both; S = 0.2; alpha = max(0.1/40 + 0.2, 0.5) = 0.5; q = 0.1/(10 * 0.3)
    q = aegaeon_quotas(0.1, {"a": 0.01, "b": 0.01}, c0_s=0.1)
    assert q == pytest.approx({"a": 1 / 30, "b": 1 / 30})


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.0, {"a": 0.01}, 0.1), "tpot_slo_s must be > 0"),
        ((0.1, {"a": 0.0}, 0.1), "decode_step_s must be > 0"),
        ((0.1, {"a": 0.01}, -1.0), "c0_s must be >= 0"),
    ],
)
def test_quota_inputs_are_validated(args, match):
    with pytest.raises(ValueError, match=match):
        aegaeon_quotas(*args)


def test_single_instance_models_share_the_seats():
    ag = AegaeonStrategy(tpot_slo_s=0.1)
    s = state(
        [
            view("a0", prompt=4, computed=4, output=1, model="m0", arrival_s=5.0),
            view("b0", prompt=4, model="m1", arrival_s=0.0),
            view("b1", prompt=4, model="m1", arrival_s=1.0),
        ],
        seqs=2,
    )
    d = ag.decide(s)
    assert d.items == (("b0", 4),) and d.note == "aegaeon:prefill"  # a0 holds the other seat


def test_prefill_groups_per_model_then_decode_turns_by_quota():
    ag = AegaeonStrategy(tpot_slo_s=0.1, prefill_group_size=2, min_switch_s=0.01)
    m0 = [view(f"a{i}", prompt=4, arrival_s=float(i)) for i in range(3)]
    m1 = [view("b0", prompt=4, arrival_s=0.5)]
    model, d = ag.next_step({"m0": state(m0), "m1": state(m1)})
    assert model == "m0" and d.items == (("a0", 4), ("a1", 4))  # oldest model, group of 2
    ag.observe_step("m0", 8, 0, 0.05)
    running = [view(f"a{i}", prompt=4, computed=4, output=1, arrival_s=float(i)) for i in (0, 1)]
    st0 = state([*running, m0[2]])
    # one prefill group per turn boundary: now m0's decode turn
    model, d = ag.next_step({"m0": st0, "m1": state(m1)})
    assert model == "m0" and d.items == (("a0", 1), ("a1", 1))
    assert ag.quotas == pytest.approx(aegaeon_quotas(0.1, {"m0": 0.02}, 0.01))
    ag.observe_step("m0", 0, 2, 0.03)  # exceeds the 1-model quota
    model, d = ag.next_step({"m0": st0, "m1": state(m1)})
    assert model == "m1" and d.items == (("b0", 4),)  # m1's request is older than a2
    assert ag.num_rounds == 1
    # the model whose turn it was may vanish from the states (all its requests finished)
    ag.current, ag.turn_s = "gone", 0.0
    ag.quotas["gone"] = 10.0
    model, d = ag.next_step({"m1": state([view("b1", prompt=4, computed=4, output=1)])})
    assert model == "m1" and d.items == (("b1", 1),)


def test_reported_switch_seconds_drive_c0_and_stay_out_of_the_decode_time():
    ag = AegaeonStrategy(min_switch_s=1e-3, ema=0.5)
    ag.observe_step("m0", 0, 2, 0.01, switch_s=0.0)  # first step: no model change, no load
    assert ag.switch_s == 1e-3 and ag.decode_step_s == {"m0": 0.01}
    # every decode turn one step, each behind a 0.2 s load: the inference by subtraction
    # would see no overhead (the decode EMA absorbs it); the reported load is the cost
    for m in ("m1", "m0", "m1", "m0"):
        ag.observe_step(m, 0, 2, 0.21, switch_s=0.2)
    assert ag.switch_s == pytest.approx(0.2, rel=0.1)
    assert ag.decode_step_s["m0"] == pytest.approx(0.01)
    assert ag.decode_step_s["m1"] == pytest.approx(0.01)
    ag.observe_step("m0", 0, 2, 0.01, switch_s=0.0)  # same model again: c0 unchanged
    assert ag.switch_s == pytest.approx(0.2, rel=0.1)
