"""The aegaeon two-model driver (ci preset): two different tiny checkpoints under a one-model
weight budget through BenchmarkRunner; switches are real, timed loads and the summary's c0 and
quotas come from them."""

import json

import pandas as pd
import pytest

from sagellm.experiments.aegaeon import aegaeon_two_models
from sagellm.scheduler_ir.strategies import aegaeon_quotas


def test_ci_preset_measures_switches_and_quotas(tmp_path):
    run = aegaeon_two_models("ci", results_root=tmp_path / "res", models_root=tmp_path / "m")
    s = run.summary
    assert set(s["models"]) == {"tiny-h64", "tiny-h128"}
    sizes = s["weight_bytes"]
    assert sizes["tiny-h128"] > sizes["tiny-h64"]
    assert s["weight_budget_bytes"] == sizes["tiny-h128"]  # one model resident at a time
    assert run.metrics["num_completed"] == 6
    assert s["num_switches"] >= 2
    assert s["mean_switch_s"] > 0 and s["c0_s"] == pytest.approx(2 * s["mean_switch_s"])
    assert all(len(v) >= 1 for v in s["switch_s_by_model"].values())
    assert s["strategy_switch_s"] > 1e-3  # the strategy learned loads, not its floor
    assert set(s["quotas_s"]) == set(s["models"])
    assert s["quotas_s"] == pytest.approx(aegaeon_quotas(0.1, s["decode_step_s"], s["c0_s"]))
    assert s["p50_ttft_s"] > 0 and 0 <= s["slo_attainment"] <= 1
    run_dir = run.run_dir
    assert run_dir.parent.name == "aegaeon_two_models"
    assert json.loads((run_dir / "aegaeon.json").read_text())["num_switches"] == s["num_switches"]
    sw = pd.read_parquet(run_dir / "switches.parquet")
    assert len(sw) == s["num_switches"] and (sw["load_s"] > 0).all()
    for name in ("metrics.json", "requests.parquet", "steps.parquet", "config.yaml"):
        assert (run_dir / name).exists(), name


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        aegaeon_two_models("huge", results_root=None, models_root=tmp_path)
