"""``sagellm sweep GRID.yaml``: run a notebook over a parameter grid with papermill.

Grid file::

    name: quickstart_dtypes            # results/sweeps/<name>/
    notebook: notebooks/00_quickstart.ipynb
    workers: 2                         # points run in parallel (each in its own kernel)
    parameters: {preset: ci}           # fixed for every point
    grid: {dtype: [float32, bfloat16]} # cartesian product
    summary_metric: output_throughput_tok_per_s

Each point runs in ``points/<point_id>/`` with ``results_root`` pointing there; its
``status.json`` says ok or failed (with the error). A rerun skips points already ok (resume);
a failed point never stops the others. Finally every point's metrics.json is collected into
``table.parquet`` / ``table.csv`` and a summary chart.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from sagellm.benchmarks.results import save_chart
from sagellm.core.config import load_config
from sagellm.core.io import atomic_write_json, atomic_write_text


class SweepConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    notebook: str
    workers: int = Field(default=1, ge=1)
    parameters: dict[str, object] = Field(default_factory=dict)
    grid: dict[str, list[object]] = Field(default_factory=dict)
    summary_metric: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)  # per cell


def expand_grid(cfg: SweepConfig) -> list[dict[str, object]]:
    keys = list(cfg.grid)
    return [
        {**cfg.parameters, **dict(zip(keys, vals, strict=True))}
        for vals in itertools.product(*(cfg.grid[k] for k in keys))
    ]


def point_id(i: int, params: dict[str, object]) -> str:
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return f"{i:03d}-{hashlib.sha256(blob).hexdigest()[:8]}"


def _run_point(cfg: SweepConfig, root: Path, pid: str, params: dict, cwd: Path) -> dict:
    import papermill as pm

    pdir = root / "points" / pid
    pdir.mkdir(parents=True, exist_ok=True)
    status = {"point_id": pid, "params": params}
    try:
        pm.execute_notebook(
            str(cwd / cfg.notebook),
            str(pdir / "executed.ipynb"),
            parameters={**params, "results_root": str(pdir / "results")},
            kernel_name="python3",
            cwd=str(cwd),
            progress_bar=False,
            execution_timeout=cfg.timeout_s,
        )
        status["status"] = "ok"
    except Exception as err:  # a failed point is recorded; the sweep goes on
        status["status"] = "failed"
        status["error"] = f"{type(err).__name__}: {err}"[:4000]
        status["traceback"] = traceback.format_exc()[-4000:]
    atomic_write_json(pdir / "status.json", status)
    return status


def run_sweep(grid_path: str | Path, results_root: str | Path = "results", progress=True):
    """Run (or resume) a sweep; returns the collected table as a pandas DataFrame."""
    from tqdm.auto import tqdm

    grid_path = Path(grid_path)
    cfg = load_config(grid_path, SweepConfig)
    cwd = Path.cwd()
    root = Path(results_root) / "sweeps" / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.yaml", yaml.safe_dump(cfg.model_dump(mode="json")))
    points = [(point_id(i, p), p) for i, p in enumerate(expand_grid(cfg))]
    todo = []
    for pid, params in points:
        st = root / "points" / pid / "status.json"
        if st.exists() and json.loads(st.read_text()).get("status") == "ok":
            continue  # resume: finished points are skipped
        todo.append((pid, params))
    bar = tqdm(
        total=len(points), initial=len(points) - len(todo), desc=cfg.name, disable=not progress
    )
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        futs = [pool.submit(_run_point, cfg, root, pid, p, cwd) for pid, p in todo]
        for f in as_completed(futs):
            st = f.result()
            if st["status"] != "ok":
                bar.write(f"point {st['point_id']} failed: {st['error'].splitlines()[0]}")
            bar.update(1)
    bar.close()
    return collect(root, cfg)


def collect(root: Path, cfg: SweepConfig):
    """One row per point: its parameters, status, error and metrics."""
    import pandas as pd

    rows = []
    for st_path in sorted((root / "points").glob("*/status.json")):
        st = json.loads(st_path.read_text())
        row = {"point_id": st["point_id"], "status": st["status"], "error": st.get("error")}
        row.update({f"param.{k}": v for k, v in st["params"].items()})
        runs = sorted(st_path.parent.glob("results/*/*/metrics.json"))
        if runs:
            row.update(json.loads(runs[-1].read_text()))
        rows.append(row)
    df = pd.DataFrame(rows)
    tmp = root / ".table.parquet.tmp"
    df.astype({c: str for c in df.columns if c.startswith("param.")}).to_parquet(tmp, index=False)
    tmp.replace(root / "table.parquet")
    atomic_write_text(root / "table.csv", df.to_csv(index=False))
    _summary_chart(df, root, cfg)
    return df


def _summary_chart(df, root: Path, cfg: SweepConfig) -> None:
    import altair as alt

    metric = cfg.summary_metric or next(
        (c for c in ("output_throughput_tok_per_s", "num_completed") if c in df.columns), None
    )
    if metric is None or metric not in df.columns or not cfg.grid:
        return
    x = f"param.{next(iter(cfg.grid))}"
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return
    ok[x] = ok[x].astype(str)
    chart = (
        alt.Chart(ok, title=f"{cfg.name}: {metric}").mark_bar().encode(x=f"{x}:N", y=f"{metric}:Q")
    )
    save_chart(chart, root / "summary")
