"""BenchmarkRunner drives the native engine with real arrival times and writes a run folder."""

import json

import pandas as pd
import pytest

from sagellm.benchmarks.config import BenchmarkConfig, load_benchmark_config
from sagellm.benchmarks.runner import BenchmarkRunner
from sagellm.benchmarks.workloads import build_workload
from sagellm.cli import main
from sagellm.core import parse_config


@pytest.fixture
def tiny_cfg(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    return parse_config(
        {
            "experiment": "tiny",
            "engine": {"model": {"path": str(folder)}, "block_size_tokens": 4},
            "workload": {
                "kind": "synthetic",
                "num_requests": 8,
                "arrival": {"process": "poisson", "rate_per_s": 40.0},
                "prompt_tokens": {"dist": "uniform", "min": 4, "max": 24},
                "output_tokens": {"dist": "fixed", "mean": 6},
            },
            "repeats": 2,
            "slo": {"ttft_s": 5.0},
        },
        BenchmarkConfig,
    )


def test_arrivals_follow_schedule_and_files_written(tiny_cfg, tmp_path):
    res = BenchmarkRunner(progress=False).run(tiny_cfg, results_root=tmp_path)
    assert len(res.repeats) == 2
    for i, rep in enumerate(res.repeats):
        wl = tiny_cfg.workload.model_copy(update={"seed": tiny_cfg.workload.seed + i})
        want = sorted(r.arrival_offset_s for r in build_workload(wl, 256))
        got = sorted(r.arrival_s for r in rep.requests)
        assert [g - got[0] for g in got] == pytest.approx(want, abs=1e-9)
        assert all(r.scheduled_s >= r.arrival_s for r in rep.requests)
        assert all(r.num_output_tokens == 6 for r in rep.requests)
    files = {p.name for p in res.run_dir.iterdir()}
    assert {
        "config.yaml",
        "env.json",
        "metrics.json",
        "repeats.json",
        "requests.parquet",
        "steps.parquet",
        "report.md",
        "ttft_cdf.png",
        "ttft_cdf.html",
    } <= files
    m = json.loads((res.run_dir / "metrics.json").read_text())
    assert m["schema_version"] == 1 and m["num_completed"] == 8
    assert 0 < m["mfu"] < 1 and m["slo_attainment"] == 1.0
    env = json.loads((res.run_dir / "env.json").read_text())
    assert env["versions"]["torch"] and env["num_threads"] >= 1
    reqs = pd.read_parquet(res.run_dir / "requests.parquet")
    assert len(reqs) == 16 and set(reqs["repeat"]) == {0, 1}
    (res.run_dir / "report.md").unlink()
    assert main(["report", str(res.run_dir)]) == 0
    assert "output throughput" in (res.run_dir / "report.md").read_text()


def test_concurrency_cap_is_respected(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(update={"mode": "concurrency", "max_concurrency": 2, "repeats": 1})
    res = BenchmarkRunner(progress=False).run(cfg, results_root=None)
    assert res.run_dir is None
    assert max(s.num_seqs for s in res.repeats[0].steps) <= 2


def test_presets_load():
    for name in ("ci", "small", "medium", "long_context", "high_concurrency"):
        assert load_benchmark_config(name).experiment == name
    with pytest.raises(ValueError, match="unknown preset 'nope'; known: ci"):
        load_benchmark_config("nope")


def test_cli_bench_and_gate_on_a_config(tiny_cfg, tmp_path, capsys):
    import yaml

    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_cfg.model_dump(mode="json")))
    assert main(["bench", "--config", str(cfg_path), "--results", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "output tokens/s:" in out
    run = next((tmp_path / "r" / "tiny").iterdir())
    # a run compared with itself passes the gate; a doctored baseline fails it
    assert main(["gate", "--baseline", str(run / "metrics.json"), "--current", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    m["p50_tpot_s_norm"] = m["p50_tpot_s_norm"] / 2
    (tmp_path / "b.json").write_text(json.dumps(m))
    assert main(["gate", "--baseline", str(tmp_path / "b.json"), "--current", str(run)]) == 1
    assert "gate: FAIL (p50_tpot_s_norm)" in capsys.readouterr().out
