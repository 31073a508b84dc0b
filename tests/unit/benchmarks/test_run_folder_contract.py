"""The run-folder contract: what every writer leaves, what ``sagellm report`` says about
folders that are not (complete) runs, and reports of every kind of run folder."""

import json

import pandas as pd
import pytest
import yaml

from sagellm.benchmarks.report import write_report
from sagellm.benchmarks.run_folder import (
    RunFolderError,
    finish_run,
    read_run,
    start_run,
    write_experiment,
)
from sagellm.cli import main


def _report_cli(path, capsys) -> tuple[int, str, str]:
    rc = main(["report", str(path)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_write_experiment_leaves_every_contract_file(tmp_path):
    import altair as alt

    df = pd.DataFrame({"capacity_blocks": [1, 2, 3], "hit_ratio": [0.1, 0.2, 0.3]})
    chart = alt.Chart(df).mark_line().encode(x="capacity_blocks:Q", y="hit_ratio:Q")
    run_dir = write_experiment(
        tmp_path, "toy", {"seed": 3, "names": ["a", "b"]}, {"num_requests": 3.0},
        {"curve": df}, kind="toy_kind", charts={"curve_chart": chart}, csv_tables=["curve"],
    )  # fmt: skip
    files = {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "env.json", "metrics.json", "run.json", "report.md"} <= files
    assert {"curve.parquet", "curve.csv", "curve_chart.png", "curve_chart.html"} <= files
    assert not [f for f in files if f.endswith(".tmp")]
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == {"seed": 3, "names": ["a", "b"]}
    assert json.loads((run_dir / "env.json").read_text())["num_threads"] >= 1
    run = read_run(run_dir)
    assert run.kind == "toy_kind" and not run.legacy
    assert run.metrics == {"schema_version": 1, "num_requests": 3.0}
    report = (run_dir / "report.md").read_text()
    assert "| num_requests | 3 |" in report and "![curve_chart.png](curve_chart.png)" in report
    assert "| 3 | 0.3000 |" in report  # the table's last row


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: p / "missing", "no such file or folder"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "a file, not a run folder"),
        (lambda p: p, "not a run folder"),
        (lambda p: start_run(p / "exp" / "run1", {"a": 1}), "half-written run (no metrics.json)"),
    ],
    ids=["missing", "file", "not_a_run", "half_written"],
)
def test_report_on_bad_paths_is_one_clear_line(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    rc, out, err = _report_cli(path, capsys)
    assert rc == 2 and out == ""
    assert needle in err and str(path) in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_not_a_run_points_at_the_runs_inside(tmp_path, capsys):
    run_dir = write_experiment(tmp_path, "exp", {"a": 1}, {"x": 1.0}, {})
    rc, _, err = _report_cli(tmp_path, capsys)
    assert rc == 2 and f"e.g. {run_dir}" in err


def test_corrupt_metrics_is_named(tmp_path, capsys):
    run_dir = write_experiment(tmp_path, "exp", {"a": 1}, {"x": 1.0}, {})
    (run_dir / "metrics.json").write_text("{not json")
    rc, _, err = _report_cli(run_dir, capsys)
    assert rc == 2 and "metrics.json: cannot read (JSONDecodeError" in err


def test_finish_before_start_is_refused(tmp_path):
    with pytest.raises(RunFolderError, match="finish_run before start_run"):
        finish_run(tmp_path / "x" / "y", "toy", {})


def test_legacy_quickstart_folder_reports(tmp_path, capsys):
    """What `make demo` wrote before the contract: an EngineConfig dump, no env.json (the
    report used to die with KeyError: 'engine')."""
    run_dir = tmp_path / "quickstart" / "20260101-000000-abc-1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"path": "m"}, "dtype": "x"}))
    (run_dir / "metrics.json").write_text(json.dumps({"num_completed": 2}))
    (run_dir / "completions.json").write_text("[]")
    rc, out, _ = _report_cli(run_dir, capsys)
    assert rc == 0 and "report written to" in out
    report = (run_dir / "report.md").read_text()
    assert "kind: quickstart (written before the run-folder contract)" in report
    assert "env.json missing" in report and "| num_completed | 2 |" in report


def test_legacy_kv_policy_folder_with_config_json_reports(tmp_path):
    """kv_policy folders used to hold config.json (report died: no config.yaml)."""
    run_dir = tmp_path / "kv_policy" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"trace": "t", "policies": ["lru"]}))
    (run_dir / "metrics.json").write_text(json.dumps({"num_requests": 5}))
    pd.DataFrame({"policy": ["lru"], "hit_ratio": [0.5]}).to_parquet(run_dir / "sweep.parquet")
    report = write_report(run_dir).read_text()
    assert "| trace | t |" in report and "| lru | 0.5000 |" in report


def test_kv_policy_sweep_run_reports(tmp_path, capsys):
    from sagellm.experiments.kv_policy_sweep import run_policy_sweep
    from sagellm.kv_policy.traces import SYNTHETIC_TRACES

    trace = SYNTHETIC_TRACES["zipf"](300, seed=1)
    run = run_policy_sweep(
        trace, ["lru", "arc"], [20, 80], compare_libcachesim=False, results_root=tmp_path
    )
    assert read_run(run.run_dir).kind == "kv_policy_sweep"
    (run.run_dir / "report.md").unlink()
    rc, _, _ = _report_cli(run.run_dir, capsys)
    report = (run.run_dir / "report.md").read_text()
    assert rc == 0 and "![miss_ratio_curve.png](miss_ratio_curve.png)" in report
    assert "## sweep (8 rows, `sweep.parquet`)" in report
    assert "wrong_eviction_rate" in report and "| compare_libcachesim | False |" in report
    assert "libcachesim_hit_ratio" not in report  # the writer's report columns only
