"""The tier-path experiment on a tiny checkpoint: the migration policy decides on the engine
path, tier loads overlap with forwards, and overlap does not change a token."""

import pytest

from sagellm.experiments.kv_tier_path import run_tier_path


def test_ci_run_shows_decisions_and_hidden_loads(tmp_path):
    run = run_tier_path("ci", tmp_path)
    m = run.metrics
    assert m["outputs_equal"] == 1.0 and m["num_requests"] == 18
    assert m["num_demote_decisions"] > 0 and m["num_drop_decisions"] > 0
    assert m["off_num_loaded_blocks"] > 0
    assert m["on_kv_load_hidden_s"] > 0 and m["off_kv_load_hidden_s"] == 0
    assert (run.run_dir / "decisions.parquet").is_file()
    d = run.tables["decisions"]
    assert {"decision", "predicted_recompute_s", "predicted_transfer_s"} <= set(d.columns)


def test_unknown_preset():
    with pytest.raises(ValueError, match="preset must be one of"):
        run_tier_path("huge")
