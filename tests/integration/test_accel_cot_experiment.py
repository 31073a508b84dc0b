"""The CoT experiment on SmolLM2-135M and a real GSM8K problem (slow: loads the real model):
speculative steps reproduce the greedy baseline token for token, every mode is timed and
counted, and the run folder holds the config, metrics and per-problem table."""

import json

import pytest

from sagellm.accel.eval_data import eval_data_available

available, reason = eval_data_available()


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.skipif(not available, reason=reason)
def test_ci_preset_runs_on_gsm8k(tmp_path):
    from sagellm.experiments.accel_cot import MODES, run_accel_cot_experiment

    run = run_accel_cot_experiment(
        "ci",
        tmp_path / "results",
        cache_dir=tmp_path / "cache",
        num_kv_blocks=64,
        num_problems=1,
        max_new_tokens=24,
        max_step_tokens=12,
        drafter_layers=6,
    )
    df = run.tables["problems"]
    assert sorted(df["mode"]) == sorted(MODES)
    spec = df[df["mode"] == "spec"].iloc[0]
    assert spec["tokens_equal_baseline"] == 1.0  # lossless on the real model
    assert spec["num_drafted_steps"] == spec["num_accepted_steps"] + spec["num_corrected_steps"]
    assert spec["num_drafted_steps"] >= 1
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert m["spec_answer_agreement"] == 1.0 and m["baseline_total_s"] > 0
    assert (run.run_dir / "problems.parquet").is_file()
    assert (run.run_dir / "config.yaml").is_file()
