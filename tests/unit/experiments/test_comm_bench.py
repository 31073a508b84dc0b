"""The comm benchmark end to end on a minimal preset: every comparison is present in one run
folder with positive timings (speed itself is measured, never asserted)."""

import json

import pytest

from sagellm.experiments.comm_bench import PRESETS, run_comm_bench


@pytest.mark.slow
@pytest.mark.heavy
def test_comm_bench_minimal_run(tmp_path):
    run = run_comm_bench(
        "ci",
        tmp_path,
        sizes_bytes=[4096],
        iters=2,
        num_small=4,
        num_layers=2,
        hidden=32,
        tokens=8,
        kv_block_bytes=[4096],
        kv_num_blocks=2,
        kv_iters=2,
    )
    m = json.loads((run.run_dir / "metrics.json").read_text())
    for key in (
        "all_reduce_ws2_4096B_shm_p50_s",
        "all_gather_ws2_4096B_gloo_p50_s",
        "fusion_shm_ws2_speedup",
        "overlap_gloo_ws2_speedup",
        "kv_tcp_4096B_p99_s",
        "kv_shm_4096B_bandwidth_bytes_per_s",
        "kv_memcpy_4096B_p50_s",
    ):
        assert m[key] > 0, key
    assert 0.0 <= m["overlap_shm_ws2_efficiency"] <= 1.0
    for name in ("collectives", "fusion_overlap", "kv_transfer"):
        assert (run.run_dir / f"{name}.parquet").exists()
    assert len(run.tables["collectives"]) == 4  # 2 ops x 2 backends
    assert set(PRESETS) == {"ci", "full"}


def test_comm_bench_rejects_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match=r"preset must be one of \['ci', 'full'\]"):
        run_comm_bench("huge", tmp_path)
