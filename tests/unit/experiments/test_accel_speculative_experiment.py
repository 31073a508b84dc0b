"""The speculative-decoding benchmark's ci preset writes its run folder with a row per
(drafter, batch size), and greedy speculative outputs equal plain decoding in it."""

import json

import pytest

from sagellm.accel.eval_data import eval_data_available

available, reason = eval_data_available()
pytestmark = pytest.mark.slow


@pytest.mark.skipif(not available, reason=reason)
def test_ci_preset_runs_and_matches_plain(tmp_path):
    from sagellm.experiments.accel_speculative import run_speculative_bench

    run = run_speculative_bench(
        "ci", tmp_path, num_prompts=2, output_tokens=6, batch=2, drafters=("ngram", "layer_skip")
    )
    table = run.tables["speculative"]
    assert sorted(set(zip(table.drafter, table.batch, strict=True))) == [
        ("layer_skip", 1),
        ("layer_skip", 2),
        ("ngram", 1),
        ("ngram", 2),
        ("plain", 1),
        ("plain", 2),
    ]
    assert run.metrics["layer_skip_b2_outputs_equal"] == 1.0
    assert run.metrics["ngram_b1_outputs_equal"] == 1.0
    assert run.metrics["layer_skip_b1_num_draft_tokens"] > 0
    assert (run.run_dir / "speculative.parquet").exists()
    assert json.loads((run.run_dir / "metrics.json").read_text())["num_prompts"] == 2.0
