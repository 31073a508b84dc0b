"""Lockstep runs on a tiny model: clocks, the worker protocol, and the gate end to end."""

import json
import statistics

import pytest
import yaml

from sagellm.benchmarks.ci_gate import compare_paired
from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.gate_run import GateSetupError, extract_commit, head_sha, run_gate
from sagellm.benchmarks.lockstep import (
    InProcessSide,
    LockstepError,
    SubprocessSide,
    run_lockstep,
)
from sagellm.benchmarks.run_folder import read_run
from sagellm.cli import main
from sagellm.core import parse_config
from sagellm.engines import create_engine


@pytest.fixture
def cfg(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    return parse_config(
        {
            "experiment": "tiny-lockstep",
            "engine": {
                "model": {"path": str(folder)},
                "block_size_tokens": 4,
                "enable_prefix_caching": True,
            },
            "mode": "concurrency",
            "max_concurrency": 4,
            "warmup_requests": 1,
            "repeats": 3,
            "workload": {
                "kind": "shared_prefix",
                "num_requests": 8,
                "num_groups": 2,
                "shared_prefix_tokens": 8,
                "prompt_tokens": {"dist": "fixed", "mean": 8},
                "output_tokens": {"dist": "fixed", "mean": 6},
            },
        },
        BenchmarkConfig,
    )


def test_each_side_times_only_its_own_steps(cfg, spin_engine_cls):
    a = InProcessSide("a", create_engine(cfg.engine), cfg, 1e11)
    # b's forwards spin 20x their own time: its TPOT is ~8x a's (measured; the tiny model's
    # forward is under half a step, the rest plan and sampling). With 4x it was ~2.6x, and
    # once under `make test` a slow stretch of a's steps inverted one repeat pair.
    b = InProcessSide("b", spin_engine_cls(create_engine(cfg.engine), extra=20.0), cfg, 1e11)
    ra, rb = run_lockstep([a, b])
    assert len(ra) == len(rb) == 3
    # were a's clock running during b's steps, a's TPOT would include b's much longer steps
    tpot_a = statistics.median(r["p50_tpot_s"] for r in ra)
    tpot_b = statistics.median(r["p50_tpot_s"] for r in rb)
    assert tpot_a * 2 < tpot_b
    assert all(x["kv_hit_rate"] == y["kv_hit_rate"] > 0 for x, y in zip(ra, rb, strict=True))
    failed = {r.metric for r in compare_paired(ra, rb) if not r.ok}
    # (a tiny model's MFU is ~1e-5: its one-point rule cannot trip here)
    assert {"p50_tpot_s", "cost_device_s_per_token"} <= failed


def test_arrival_mode_is_refused(cfg):
    arrival = cfg.model_copy(update={"mode": "arrival"})
    with pytest.raises(ValueError, match="mode"):
        InProcessSide("a", create_engine(cfg.engine), arrival, 1e11)


def test_worker_processes_speak_the_protocol(cfg, tmp_path):
    from sagellm.benchmarks.gate_run import source_root

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    sides = [
        SubprocessSide(n, source_root(), path, 1e11, tmp_path / f"{n}.log") for n in ("a", "b")
    ]
    ra, rb = run_lockstep(sides)
    assert len(ra) == len(rb) == 3
    assert all(r["num_completed"] == 8 for r in ra + rb)


def test_a_broken_worker_is_named(cfg, tmp_path):
    from sagellm.benchmarks.gate_run import source_root

    path = tmp_path / "cfg.yaml"
    bad = cfg.model_dump(mode="json")
    bad["engine"]["model"]["path"] = str(tmp_path / "no-such-model")
    path.write_text(yaml.safe_dump(bad))
    side = SubprocessSide("baseline", source_root(), path, 1e11)
    with pytest.raises(LockstepError, match="baseline"):
        run_lockstep([side])


def test_extract_commit_and_setup_errors(tmp_path):
    from sagellm.benchmarks.gate_run import load_baseline, source_root

    sha = head_sha()
    tree = extract_commit(sha, source_root(), tmp_path / "tree")
    assert (tree / "sagellm" / "benchmarks" / "gate_worker.py").is_file()
    with pytest.raises(GateSetupError, match="not in the repository"):
        extract_commit("0" * 40, source_root(), tmp_path / "nope")
    (tmp_path / "b.json").write_text(json.dumps({"mfu": 0.3}))
    with pytest.raises(GateSetupError, match="git_sha"):
        load_baseline(tmp_path / "b.json")
    with pytest.raises(GateSetupError, match="make baseline"):
        load_baseline(tmp_path / "missing.json")


def test_gate_end_to_end_against_head(cfg, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"git_sha": head_sha()}))
    res = run_gate(str(path), base, repeats=3, results_root=tmp_path / "results")
    assert len(res.baseline_repeats) == len(res.current_repeats) == 3
    # 3 repeats over 3 worker pairs, still the seeds 0, 1, 2: equal prompts, equal hit rates
    assert [r["kv_hit_rate"] for r in res.baseline_repeats] == [
        r["kv_hit_rate"] for r in res.current_repeats
    ]
    saved = json.loads((res.run_dir / "gate.json").read_text())
    assert saved["baseline_sha"] == head_sha() and len(saved["rows"]) == 8
    assert (res.run_dir / "gate.txt").read_text().startswith("metric")
    assert (res.run_dir / "baseline-0.log").exists() and (res.run_dir / "current-1.log").exists()
    # a run folder like every other: env.json, the rule table, a report `sagellm report` reads
    assert read_run(res.run_dir).kind == "gate" and (res.run_dir / "env.json").exists()
    assert main(["report", str(res.run_dir)]) == 0
    assert "## rules (8 rows, `rules.parquet`)" in (res.run_dir / "report.md").read_text()


def test_a_silent_worker_is_killed_and_named(tmp_path):
    tree = tmp_path / "tree" / "sagellm" / "benchmarks"
    tree.mkdir(parents=True)
    (tree.parent / "__init__.py").write_text("")
    (tree / "__init__.py").write_text("")
    (tree / "gate_worker.py").write_text("import threading\nthreading.Event().wait()\n")
    side = SubprocessSide(
        "baseline", tmp_path / "tree", tmp_path / "c.yaml", 1e11, answer_timeout_s=2
    )
    with pytest.raises(LockstepError, match="baseline: no answer in 2 s"):
        run_lockstep([side])


def test_split_repeats_covers_every_repeat_once():
    from sagellm.benchmarks.lockstep import split_repeats

    assert split_repeats(20, 4) == [(0, 5), (5, 5), (10, 5), (15, 5)]
    assert split_repeats(7, 3) == [(0, 3), (3, 2), (5, 2)]
    assert split_repeats(2, 4) == [(0, 1), (1, 1)]
