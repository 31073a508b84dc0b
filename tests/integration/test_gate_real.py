"""The gate on the real ci preset (SmolLM2-135M): an identical engine passes, a 10% slower one
fails. Three engines run in lockstep, as `sagellm gate` runs the baseline and the current
tree (fresh engines for each quarter of the repeats, as the gate starts fresh processes), and
are judged by the same paired rules.

Heavy (`make test-heavy`): three SmolLM2 engines x 20 repeats take ~5 minutes on 2 cores, and
`make test` already runs the real gate itself (`make gate`); the rules' pass and fail cases are
unit-tested on synthetic series in tests/unit/benchmarks."""

import pytest

from sagellm.benchmarks.ci_gate import compare_paired, format_table
from sagellm.benchmarks.config import load_benchmark_config
from sagellm.benchmarks.device import measure_peak_flops
from sagellm.benchmarks.gate_run import PEAK_WINDOW_S, PROCESSES_PER_SIDE
from sagellm.benchmarks.lockstep import InProcessSide, run_in_generations
from sagellm.engines import create_engine

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


@pytest.fixture(scope="module")
def lockstep_runs(spin_engine_cls):
    cfg = load_benchmark_config("ci")
    peak = measure_peak_flops("cpu", cfg.engine.model.dtype, min_time_s=PEAK_WINDOW_S)

    def make_sides(part, k):
        return [
            InProcessSide("base", create_engine(cfg.engine), part, peak),
            InProcessSide("same", create_engine(cfg.engine), part, peak),
            InProcessSide("slow", spin_engine_cls(create_engine(cfg.engine), 0.10), part, peak),
        ]

    return run_in_generations(cfg, PROCESSES_PER_SIDE, make_sides)


def test_identical_engine_passes(lockstep_runs):
    base, same, _ = lockstep_runs
    assert len(base) == len(same) == load_benchmark_config("ci").repeats
    rows = compare_paired(base, same)
    assert all(r.ok for r in rows), format_table(rows)


def test_ten_percent_slower_engine_fails(lockstep_runs):
    base, _, slow = lockstep_runs
    rows = compare_paired(base, slow)
    failed = {r.metric for r in rows if not r.ok}
    assert {"p50_tpot_s", "p95_tpot_s", "cost_device_s_per_token"} <= failed, format_table(rows)
