"""``sagellm sweep GRID.yaml``: run a notebook over a parameter grid with papermill.

Grid file::

    name: quickstart_dtypes            # results/sweeps/<name>/
    notebook: notebooks/00_quickstart.ipynb
    workers: 2                         # local backend: points run in parallel
    parameters: {preset: ci}           # fixed for every point
    grid: {dtype: [float32, bfloat16]} # cartesian product
    summary_metric: output_throughput_tok_per_s
    cpus_per_point: 1                  # ray backend: each task's resource request
    gpus_per_point: null               # ray backend: null = 1 where the cluster has GPUs

Each point is a papermill execution in a subprocess (:mod:`sagellm.benchmarks.sweep_point`:
staged, then published whole as ``points/<point_id>/`` with ``status.json`` ok or failed).
Backends: ``local`` (default, threads in this process, ``workers`` at a time) and ``ray``
(one Ray task per point, :mod:`sagellm.benchmarks.sweep_ray`; extra ``sagellm[ray]``).
A rerun skips points already ok (resume); a failed point never stops the others. Finally
every ok point's metrics.json is collected into one table, the same for both backends, and
the sweep folder is a run folder (kind ``sweep``, :mod:`sagellm.benchmarks.run_folder`):
``config.yaml`` (the grid), ``env.json``, ``table.parquet``/``table.csv``, ``summary`` chart,
``metrics.json`` (points, ok, failed), ``report.md``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sagellm.benchmarks.run_folder import finish_run, start_run
from sagellm.benchmarks.sweep_point import clear_staging, new_token, run_point
from sagellm.core.config import load_config
from sagellm.core.errors import ConfigError

BACKENDS = ("local", "ray")


class SweepConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    notebook: str
    workers: int = Field(default=1, ge=1)
    parameters: dict[str, object] = Field(default_factory=dict)
    grid: dict[str, list[object]] = Field(default_factory=dict)
    summary_metric: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)  # per cell
    cpus_per_point: float = Field(default=1.0, gt=0)  # ray backend: CPUs each task asks for
    gpus_per_point: float | None = Field(default=None, ge=0)  # ray: None = 1 if GPUs exist


def expand_grid(cfg: SweepConfig) -> list[dict[str, object]]:
    keys = list(cfg.grid)
    return [
        {**cfg.parameters, **dict(zip(keys, vals, strict=True))}
        for vals in itertools.product(*(cfg.grid[k] for k in keys))
    ]


def point_id(i: int, params: dict[str, object]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return f"{i:03d}-{hashlib.sha256(blob).hexdigest()[:8]}"


def _pending(root: Path, points: list[tuple[str, dict]]) -> list[tuple[str, dict, str]]:
    """The points not yet ok, each with a fresh attempt token."""
    todo = []
    for pid, params in points:
        st = root / "points" / pid / "status.json"
        if st.exists() and json.loads(st.read_text()).get("status") == "ok":
            continue  # resume: finished points are skipped
        todo.append((pid, params, new_token()))
    return todo


def _run_local(cfg: SweepConfig, root: Path, todo, cwd: Path, on_done) -> None:
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        futs = [
            pool.submit(run_point, cfg.notebook, p, str(root), pid, tok, str(cwd), cfg.timeout_s)
            for pid, p, tok in todo
        ]
        for f in as_completed(futs):
            on_done(f.result())


def run_sweep(
    grid_path: str | Path,
    results_root: str | Path = "results",
    progress: bool = True,
    backend: Literal["local", "ray"] = "local",
    address: str | None = None,
    connect_timeout_s: float | None = None,
):
    """Run (or resume) a sweep on ``backend``; returns the collected table (a pandas
    DataFrame). ``address``/``connect_timeout_s``: the Ray cluster to join (ray only)."""
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if address is not None and backend != "ray":
        raise ConfigError("address is for --backend ray only")
    grid_path = Path(grid_path)
    cfg = load_config(grid_path, SweepConfig)
    cwd = Path.cwd()
    root = Path(results_root) / "sweeps" / cfg.name
    if backend == "ray":
        from sagellm.benchmarks.sweep_ray import import_ray

        import_ray()  # fail before touching the folder
    start_run(root, {**cfg.model_dump(mode="json"), "backend": backend})
    clear_staging(root)
    points = [(point_id(i, p), p) for i, p in enumerate(expand_grid(cfg))]
    todo = _pending(root, points)
    bar = tqdm(
        total=len(points), initial=len(points) - len(todo), desc=cfg.name, disable=not progress
    )

    def on_done(st: dict) -> None:
        if st["status"] != "ok":
            bar.write(f"point {st['point_id']} failed: {st['error'].splitlines()[0]}")
        bar.update(1)

    try:
        if backend == "ray":
            from sagellm.benchmarks.sweep_ray import DEFAULT_CONNECT_TIMEOUT_S, run_points_ray

            timeout = connect_timeout_s or DEFAULT_CONNECT_TIMEOUT_S
            run_points_ray(cfg, root, todo, cwd, on_done, address, timeout)
        else:
            _run_local(cfg, root, todo, cwd, on_done)
    finally:
        bar.close()
    return collect(root, cfg)


def collect(root: Path, cfg: SweepConfig):
    """One row per point (sorted by point id): its parameters, status, error, wall time and
    the metrics of its last complete run folder (ok points only); writes the sweep's run
    folder files and returns the table."""
    import pandas as pd

    rows = []
    for st_path in sorted((root / "points").glob("*/status.json")):
        st = json.loads(st_path.read_text())
        row = {"point_id": st["point_id"], "status": st["status"], "error": st.get("error")}
        row["point_wall_s"] = st.get("wall_s")
        row.update({f"param.{k}": v for k, v in st["params"].items()})
        runs = sorted(st_path.parent.glob("results/*/*/metrics.json"))
        if runs and st["status"] == "ok":
            row.update(json.loads(runs[-1].read_text()))
        rows.append(row)
    df = pd.DataFrame(rows)
    table = df.astype({c: str for c in df.columns if c.startswith("param.")})
    num_ok = int((df["status"] == "ok").sum()) if len(df) else 0
    metrics = {
        "num_points": len(df),
        "num_ok_points": num_ok,
        "num_failed_points": len(df) - num_ok,
    }
    chart = _summary_chart(df, cfg)
    finish_run(
        root,
        "sweep",
        metrics,
        {"table": table},
        {"summary": chart} if chart is not None else {},
        csv_tables=("table",),
    )
    return df


def _summary_chart(df, cfg: SweepConfig):
    import altair as alt

    metric = cfg.summary_metric or next(
        (c for c in ("output_throughput_tok_per_s", "num_completed") if c in df.columns), None
    )
    if metric is None or metric not in df.columns or not cfg.grid:
        return None
    x = f"param.{next(iter(cfg.grid))}"
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return None
    ok[x] = ok[x].astype(str)
    return (
        alt.Chart(ok, title=f"{cfg.name}: {metric}").mark_bar().encode(x=f"{x}:N", y=f"{metric}:Q")
    )
