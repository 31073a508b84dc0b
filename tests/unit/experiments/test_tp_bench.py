"""The TP benchmark end to end on the ci preset: every variant in one run folder, tp=2 with the
same greedy tokens as tp=1, comm measured (speed itself is never asserted)."""

import json

import pytest

from sagellm.experiments.tp_bench import VARIANTS, run_tp_bench


@pytest.mark.heavy
def test_tp_bench_ci_run(tmp_path):
    run = run_tp_bench("ci", tmp_path, num_requests=2, max_tokens=4)
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert m["tp1_comm_share"] == 0.0
    for name in VARIANTS:
        assert m[f"{name}_same_tokens_as_tp1"] == 1.0, name
    for name in ("tp2_fused", "tp2_unfused", "tp2_unfused_overlap"):
        assert 0.0 < m[f"{name}_comm_share"] <= 1.0, name
    # the unbucketed plan issues one collective per request: more than the fused plan
    assert m["tp2_unfused_num_collectives"] > m["tp2_fused_num_collectives"]
    assert (run.run_dir / "variants.parquet").exists()
