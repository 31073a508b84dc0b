"""Writes and reads run folders: ``results/<experiment>/<run_id>/``

    config.yaml        the resolved BenchmarkConfig
    env.json           git sha, package versions, device, threads
    metrics.json       flat, unit-suffixed metrics (median over repeats) + schema_version
    repeats.json       the same metrics for every repeat
    requests.parquet   one row per request and repeat (timestamps in seconds from run start)
    steps.parquet      one row per engine step and repeat
    report.md, *.png, *.html   written by sagellm.benchmarks.report

Every file is written atomically.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from dataclasses import asdict
from pathlib import Path

import yaml

from sagellm.benchmarks.results import SCHEMA_VERSION, make_run_id
from sagellm.core.config import config_hash
from sagellm.core.io import atomic_write_json, atomic_write_parquet, atomic_write_text

_PACKAGES = ("sagellm", "torch", "transformers", "numpy", "pandas", "gguf", "papermill")


def environment(device: str, num_threads: int) -> dict[str, object]:
    root = Path(__file__).resolve().parents[2]
    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    return {
        "git_sha": sha,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
        "num_threads": num_threads,
    }


def write_run(result, results_root: Path) -> Path:
    """Write a :class:`~sagellm.benchmarks.runner.RunResult`; returns the run folder."""
    import pandas as pd
    import torch

    cfg = result.config
    run_dir = results_root / cfg.experiment / make_run_id(config_hash(cfg))
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json")))
    env = environment(cfg.engine.device, torch.get_num_threads())
    atomic_write_json(run_dir / "env.json", {**env, **getattr(result, "env", {})})
    atomic_write_json(
        run_dir / "metrics.json", {"schema_version": SCHEMA_VERSION, **result.metrics}
    )
    atomic_write_json(run_dir / "repeats.json", [r.metrics for r in result.repeats])
    req_rows, step_rows = [], []
    for i, rep in enumerate(result.repeats):
        t0 = min((r.arrival_s for r in rep.requests), default=0.0)
        for r in rep.requests:
            row = asdict(r)
            row["token_times_s"] = [t - t0 for t in r.token_times_s]
            for k in ("arrival_s", "scheduled_s", "first_token_s", "finished_s"):
                row[k] = None if row[k] is None else row[k] - t0
            req_rows.append({"repeat": i, **row})
        for s in rep.steps:
            step_rows.append({"repeat": i, **asdict(s), "start_s": s.start_s - t0})
    atomic_write_parquet(run_dir / "requests.parquet", pd.DataFrame(req_rows))
    atomic_write_parquet(run_dir / "steps.parquet", pd.DataFrame(step_rows))
    from sagellm.benchmarks.report import write_report

    write_report(run_dir)
    return run_dir


def read_metrics(run_dir: str | Path) -> dict[str, float | None]:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
