"""A sweep with a deliberately failing point completes the others and reports the failure."""

import json

import nbformat
import pandas as pd

from sagellm.benchmarks.sweep import run_sweep
from sagellm.cli import main

SOURCE = """import json, pathlib
from sagellm.core.io import atomic_write_json
assert x != 2, "point x=2 fails on purpose"
atomic_write_json(pathlib.Path(results_root) / "toy" / f"run{x}" / "metrics.json",
                  {"num_requests": 1, "num_completed": 1, "value": x * 10})"""


def test_sweep_with_failing_point_and_resume(tmp_path, monkeypatch):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('x = 0\nresults_root = "results"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(SOURCE)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "toy.ipynb")
    (tmp_path / "grid.yaml").write_text(
        "name: toy\nnotebook: toy.ipynb\nworkers: 2\ngrid: {x: [1, 2, 3]}\nsummary_metric: value\n"
    )
    monkeypatch.chdir(tmp_path)
    df = run_sweep("grid.yaml", results_root=tmp_path / "res", progress=False)
    by_x = {int(r["param.x"]): r for _, r in df.iterrows()}
    assert by_x[1]["status"] == "ok" and by_x[1]["value"] == 10
    assert by_x[3]["status"] == "ok" and by_x[3]["value"] == 30
    assert by_x[2]["status"] == "failed" and "fails on purpose" in by_x[2]["error"]
    root = tmp_path / "res" / "sweeps" / "toy"
    assert len(pd.read_parquet(root / "table.parquet")) == 3
    assert (root / "table.csv").exists() and (root / "summary.png").exists()
    # resume: ok points are skipped (their status files stay untouched), the failed one reruns
    ok_status = root / "points" / by_x[1]["point_id"] / "status.json"
    mtime = ok_status.stat().st_mtime_ns
    df2 = run_sweep("grid.yaml", results_root=tmp_path / "res", progress=False)
    assert ok_status.stat().st_mtime_ns == mtime
    assert json.loads(ok_status.read_text())["status"] == "ok"
    assert (df2["status"] == "failed").sum() == 1
    # the sweep folder is a run folder: a failed point keeps no results; `sagellm report` reads it
    failed_dir = root / "points" / by_x[2]["point_id"]
    assert (failed_dir / "papermill.log").exists() and not (failed_dir / "results").exists()
    assert not list((root / "points" / ".staging").glob("*"))
    assert main(["report", str(root)]) == 0
    report = (root / "report.md").read_text()
    assert "kind: sweep" in report and "| num_failed_points | 1 |" in report
