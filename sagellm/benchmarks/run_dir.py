"""Writes a benchmark's run folder ``results/<experiment>/<run_id>/`` through the run-folder
contract (:mod:`sagellm.benchmarks.run_folder`, kind ``benchmark``):

    config.yaml        the resolved BenchmarkConfig
    env.json           git sha, package versions, device, threads (+ the backend's extras)
    repeats.json       the metrics of every repeat
    requests.parquet   one row per request and repeat (timestamps in seconds from run start)
    steps.parquet      one row per engine step and repeat
    run.json, metrics.json (median over repeats), report.md and ttft_cdf.{png,html}

Every file is written atomically.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from sagellm.benchmarks.results import make_run_id
from sagellm.benchmarks.run_folder import finish_run, start_run
from sagellm.core.config import config_hash
from sagellm.core.io import atomic_write_json


def write_run(result, results_root: Path) -> Path:
    """Write a :class:`~sagellm.benchmarks.runner.RunResult`; returns the run folder."""
    import pandas as pd

    cfg = result.config
    run_dir = results_root / cfg.experiment / make_run_id(config_hash(cfg))
    start_run(
        run_dir,
        cfg.model_dump(mode="json"),
        env_extra=getattr(result, "env", {}),
        device=cfg.engine.device,
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
    tables = {"requests": pd.DataFrame(req_rows), "steps": pd.DataFrame(step_rows)}
    return finish_run(run_dir, "benchmark", result.metrics, tables)
