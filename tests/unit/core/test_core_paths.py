"""Relative paths resolve from the project root whatever folder the process starts in (a Jupyter
kernel starts in notebooks/), and .gitignore covers every results folder."""

import subprocess
from pathlib import Path

import pytest

from sagellm.core import from_project_root, project_root

ROOT = Path(__file__).resolve().parents[3]


def test_relative_paths_resolve_from_root_not_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert project_root() == ROOT
    assert from_project_root("results") == ROOT / "results"
    trace = "../shared/data/traces/mooncake_conversation_trace.jsonl"
    assert from_project_root(trace) == ROOT / trace
    assert from_project_root(tmp_path) == tmp_path


@pytest.mark.parametrize(
    "path", ["results/quickstart/x/metrics.json", "notebooks/results/q/metrics.json",
             "tests/notebooks/ci/results/q/m.json", "site/index.html"],
)  # fmt: skip
def test_gitignore_covers_results_folders(path):
    proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path])
    assert proc.returncode == 0, f"{path} is not ignored"


def test_gitignore_keeps_baseline_and_notebooks():
    for path in ("results/baseline/ci.json", "notebooks/00_quickstart.ipynb"):
        proc = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", path])
        assert proc.returncode == 1, f"{path} is ignored"
