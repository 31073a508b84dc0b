"""The paired (lockstep) gate rules and the pausable clock."""

import time

import pytest

from sagellm.benchmarks.ci_gate import compare_paired, format_table
from sagellm.benchmarks.lockstep import PausableClock

REP = {
    "mfu": 0.30,
    "p50_ttft_s": 0.5,
    "p95_ttft_s": 0.8,
    "p50_tpot_s": 0.07,
    "p95_tpot_s": 0.08,
    "kv_hit_rate": 0.25,
    "comm_share": 0.0,
    "cost_device_s_per_token": 0.013,
}


def reps(n=9, **scale):
    """n repeats whose times wobble by +-3% (the same wobble on both sides unless scaled)."""
    out = []
    for i in range(n):
        w = 1.0 + 0.03 * ((i % 3) - 1)
        out.append({k: (v * w if k.endswith("_s") or "tpot" in k else v) for k, v in REP.items()})
    for k, f in scale.items():
        for r in out:
            r[k] = r[k] * f if "per_token" in k or k.endswith("_s") else r[k] + f
    return out


def failed(cur):
    return [r.metric for r in compare_paired(reps(), cur) if not r.ok]


def test_identical_passes():
    assert failed(reps()) == []


@pytest.mark.parametrize(
    "metric, bad, fine",
    [
        ("p50_ttft_s", 1.06, 1.04),
        ("p95_ttft_s", 1.06, 1.04),
        ("p50_tpot_s", 1.06, 1.04),
        ("p95_tpot_s", 1.06, 1.04),
        ("cost_device_s_per_token", 1.06, 1.04),
        ("mfu", -0.011, -0.009),
        ("kv_hit_rate", -0.01, 0.1),
        ("comm_share", 0.01, 0.0),
    ],
)
def test_each_rule_trips_on_its_own(metric, bad, fine):
    assert failed(reps(**{metric: bad})) == [metric]
    assert failed(reps(**{metric: fine})) == []


def test_median_of_pairs_ignores_a_minority_of_spikes():
    cur = reps()
    for r in cur[:4]:  # 4 of 9 repeats hit by a 50% slow spell
        r["p50_tpot_s"] *= 1.5
    assert failed(cur) == []
    for r in cur[4:8]:  # 8 of 9: a regression
        r["p50_tpot_s"] *= 1.5
    assert failed(cur) == ["p50_tpot_s"]


def test_a_change_the_noise_explains_passes():
    cur = reps()
    for i, r in enumerate(cur):  # median +6%, but the pairs scatter from -6% to +12%
        r["p95_tpot_s"] *= (0.94, 1.06, 1.12)[i % 3]
    row = next(r for r in compare_paired(reps(), cur) if r.metric == "p95_tpot_s")
    assert row.change == pytest.approx(0.06) and row.low <= 0 and row.ok


def test_interval_brackets_the_change_and_table_prints_it():
    rows = compare_paired(reps(), reps(p50_tpot_s=1.10))
    row = next(r for r in rows if r.metric == "p50_tpot_s")
    assert row.low <= row.change <= row.high
    assert row.change == pytest.approx(0.10)
    text = format_table(rows)
    assert "+10.0%" in text and "FAIL" in text


def test_unequal_repeat_counts_are_rejected():
    with pytest.raises(ValueError, match="repeats"):
        compare_paired(reps(3), reps(4))


def test_pausable_clock_stands_still_while_paused():
    c = PausableClock()
    a = c()
    time.sleep(0.01)
    assert c() == a  # starts paused
    c.resume()
    time.sleep(0.02)
    c.pause()
    b = c()
    time.sleep(0.02)
    assert c() == b and 0.015 <= b - a < 0.5
    c.resume()
    assert c() >= b
