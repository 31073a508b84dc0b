"""The same sweep on the local and on the Ray backend: wall time of each and whether they
gather the same table.

Presets (grid files in ``experiments/``): ``ci`` = 4 points of notebook 03 (a minute or two),
``full`` = 16 points (several minutes per backend). Each backend runs the grid from scratch in
its own folder under the run folder (``<backend>/sweeps/<name>/``); the local backend with the
grid's ``workers`` threads, Ray with ``cpus_per_point`` per task on ``address`` (default: a
local Ray started here, with every CPU of this machine). Tables are compared on the columns
that do not measure time (``*_s``, ``*_per_s``, ``*_us``, ``mfu`` and the like differ from run
to run by nature): ``same_table`` is True when those are equal point for point.

Run folder ``results/sweep_backends/<run_id>/`` (kind ``sweep_backends``): ``backends``
table (backend, wall_s, points ok/failed), ``metrics.json`` (``<backend>_wall_s``,
``ray_over_local_wall_ratio``, ``same_table``), ``report.md``.

CLI: ``python -m sagellm.experiments.sweep_backends --preset ci [--address HOST:PORT]``
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from sagellm.benchmarks.run_folder import finish_run, new_run_dir, start_run
from sagellm.benchmarks.sweep import run_sweep

PRESETS = {
    "ci": "experiments/sweep_backends_ci.yaml",
    "full": "experiments/sweep_backends_full.yaml",
}
_TIMED = re.compile(r"(_s|_per_s|_us|_ms|_norm|mfu|_median|_max)$|^point_wall_s$|^error$")


def untimed_columns(df) -> list[str]:
    """The columns of a sweep table that do not measure time (comparable across runs)."""
    return [c for c in df.columns if not _TIMED.search(c)]


def _differences(a, b, cols: list[str], backend: str):
    """Per untimed column, how many rows of ``b`` differ from ``a`` (NaN equals NaN)."""
    import pandas as pd

    rows = []
    for c in cols:
        if c not in b.columns or len(a) != len(b):
            rows.append({"backend": backend, "column": c, "num_rows_differing": len(a)})
            continue
        x, y = a[c].reset_index(drop=True), b[c].reset_index(drop=True)
        same = (x == y) | (x.isna() & y.isna())
        rows.append({"backend": backend, "column": c, "num_rows_differing": int((~same).sum())})
    return pd.DataFrame(rows)


def compare_backends(
    preset: str = "ci",
    results_root: str | Path = "results",
    address: str | None = None,
    backends: tuple[str, ...] = ("local", "ray"),
):
    """Run the preset's grid on each backend; returns (run folder, metrics dict)."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    grid = PRESETS[preset]
    params = {"preset": preset, "grid": grid, "backends": list(backends), "address": address}
    run_dir = start_run(new_run_dir(results_root, "sweep_backends", params), params)
    rows, tables = [], {}
    for backend in backends:
        t0 = time.perf_counter()
        df = run_sweep(
            grid,
            run_dir / backend,
            backend=backend,
            address=address if backend == "ray" else None,
        )
        wall = time.perf_counter() - t0
        ok = int((df["status"] == "ok").sum())
        rows.append({"backend": backend, "wall_s": wall, "num_ok": ok, "num_failed": len(df) - ok})
        tables[backend] = df
    metrics: dict[str, float | bool] = {f"{r['backend']}_wall_s": r["wall_s"] for r in rows}
    first, *rest = backends
    cols = untimed_columns(tables[first])
    diffs = [_differences(tables[first], tables[b], cols, b) for b in rest]
    metrics["same_table"] = all(untimed_columns(tables[b]) == cols for b in rest) and not any(
        d["num_rows_differing"].sum() for d in diffs
    )
    if {"local", "ray"} <= set(backends):
        metrics["ray_over_local_wall_ratio"] = metrics["ray_wall_s"] / metrics["local_wall_s"]
    out = {"backends": pd.DataFrame(rows)}
    if diffs:
        out["differences"] = pd.concat(diffs, ignore_index=True)
    finish_run(run_dir, "sweep_backends", metrics, out)
    return run_dir, metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ci", choices=sorted(PRESETS), help="grid size")
    ap.add_argument("--results-root", default="results", help="results root folder")
    ap.add_argument("--address", default=None, help="Ray cluster (default: a local one)")
    ap.add_argument("--backends", default="local,ray", help="comma-separated, in run order")
    args = ap.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    run_dir, metrics = compare_backends(args.preset, args.results_root, args.address, backends)
    for k, v in metrics.items():
        print(f"{k:>28}: {v}")
    print(f"written to {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
