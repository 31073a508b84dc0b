"""``sagellm gate``: the committed baseline's code and the current code, run in lockstep.

The baseline file (``results/baseline/ci.json``) names the commit it measured (``git_sha``).
The gate extracts that commit's source tree with ``git archive`` and runs the preset twice in
one run, step by step interleaved (:mod:`sagellm.benchmarks.lockstep`): a worker process on
the baseline tree and one on the current tree, sharing one measured peak FLOP/s. The rules of
:func:`~sagellm.benchmarks.ci_gate.compare_paired` then judge the per-repeat changes. The
numbers stored in the baseline file are what that commit measured when it was made the
baseline (for the record and for cross-run reading); the verdict never depends on them.

Everything lands in ``results/gate/<run_id>/``: the resolved config, gate.json (table, both
sides' per-repeat metrics, commits), the table as text, and each worker's log.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from sagellm.benchmarks.ci_gate import GateRow, compare_paired
from sagellm.benchmarks.config import BenchmarkConfig, load_benchmark_config
from sagellm.benchmarks.device import measure_peak_flops
from sagellm.benchmarks.lockstep import SubprocessSide, check_lockstep_config, run_in_generations
from sagellm.benchmarks.results import make_run_id
from sagellm.benchmarks.run_folder import finish_run, start_run
from sagellm.core.config import config_hash
from sagellm.core.io import atomic_write_json, atomic_write_text

WORKER_MODULE = "sagellm/benchmarks/gate_worker.py"
# the peak both sides' MFU is read against: best GEMM over this many seconds (a short window
# measured in a slow spell once doubled every MFU and turned a 1.6% change into -0.012 MFU)
PEAK_WINDOW_S = 4.0
# fresh worker processes per side over a run: a process's memory layout makes identical code
# 1-3% faster or slower for its whole life (measured: between-run sd 1.7% of TPOT while the
# within-run interval was +-1%); the repeats are split over several processes so the layout
# lottery averages out instead of passing for a regression
PROCESSES_PER_SIDE = 4


class GateSetupError(RuntimeError):
    """The gate cannot run (no baseline commit, not a git checkout, ...): not a verdict."""


@dataclass
class GateResult:
    rows: list[GateRow]
    baseline_repeats: list[dict]
    current_repeats: list[dict]
    run_dir: Path | None

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)


def source_root() -> Path:
    """The tree this ``sagellm`` package is imported from (a git checkout for the gate)."""
    return Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise GateSetupError(f"git {' '.join(args)} failed in {root}: {err}") from err


def head_sha(root: Path | None = None) -> str | None:
    out = _git(root or source_root(), "rev-parse", "HEAD")
    return out.stdout.strip() or None if out.returncode == 0 else None


def uncommitted_package_changes(root: Path | None = None) -> str:
    """``git status --porcelain`` of ``sagellm/`` (empty when the package is committed)."""
    return _git(root or source_root(), "status", "--porcelain", "sagellm").stdout


def extract_commit(sha: str, repo: Path, dest: Path) -> Path:
    """Write commit ``sha``'s tree under ``dest`` (``git archive``); fetches it from origin
    first when this clone lacks it (e.g. a shallow clone). Returns ``dest``."""
    if _git(repo, "cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
        _git(repo, "fetch", "--quiet", "origin", sha, timeout_s=120)
        if _git(repo, "cat-file", "-e", f"{sha}^{{commit}}").returncode != 0:
            raise GateSetupError(
                f"baseline git_sha {sha} is not in the repository at {repo} and could not be "
                "fetched from origin (shallow clone?); `git fetch --unshallow` or refresh the "
                "baseline with `make baseline`"
            )
    if _git(repo, "cat-file", "-e", f"{sha}:{WORKER_MODULE}").returncode != 0:
        raise GateSetupError(
            f"baseline commit {sha[:12]} predates the lockstep gate ({WORKER_MODULE} is "
            "missing); refresh the baseline with `make baseline` and commit it"
        )
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.with_suffix(".tar")
    out = _git(repo, "archive", "--format=tar", "-o", str(archive), sha)
    if out.returncode != 0:
        raise GateSetupError(f"git archive {sha} failed: {out.stderr.strip()}")
    import tarfile

    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    archive.unlink()
    return dest


def load_baseline(path: str | Path) -> dict:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise GateSetupError(f"no baseline at {p}; create it with `make baseline`") from None
    if not data.get("git_sha"):
        raise GateSetupError(
            f"{p} has no git_sha (the commit it measured); refresh it with `make baseline`"
        )
    return data


def run_gate(
    preset: str = "ci",
    baseline_path: str | Path = "results/baseline/ci.json",
    repeats: int | None = None,
    results_root: str | Path | None = "results",
    processes_per_side: int = PROCESSES_PER_SIDE,
) -> GateResult:
    """Run the baseline commit and the current tree in lockstep on ``preset`` and judge.

    The repeats are split over ``processes_per_side`` successive pairs of worker processes;
    pair k runs its share of the repeats with the workload seeds that follow pair k-1's, so
    repeat r replays seed + r whatever the split."""
    cfg = load_benchmark_config(preset)
    if repeats is not None:
        cfg = cfg.model_copy(update={"repeats": repeats})
    check_lockstep_config(cfg)
    baseline = load_baseline(baseline_path)
    root = source_root()
    run_dir = None
    if results_root is not None:
        run_dir = Path(results_root) / "gate" / make_run_id(config_hash(cfg))
        start_run(run_dir, cfg.model_dump(mode="json"), device=cfg.engine.device)
    with tempfile.TemporaryDirectory(prefix="sagellm-gate-") as tmp:
        tmp_path = Path(tmp)
        base_src = extract_commit(baseline["git_sha"], root, tmp_path / "baseline")
        if run_dir is None:
            atomic_write_text(tmp_path / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json")))
        device = cfg.engine.device
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        peak = measure_peak_flops(device, cfg.engine.model.dtype, min_time_s=PEAK_WINDOW_S)
        logs = run_dir or tmp_path

        def make_sides(part: BenchmarkConfig, k: int) -> list[SubprocessSide]:
            path = tmp_path / f"config-{k}.yaml"
            # only what differs from the defaults: the baseline commit's config classes may
            # not know fields added since (they forbid unknown ones)
            body = part.model_dump(mode="json", exclude_defaults=True)
            atomic_write_text(path, yaml.safe_dump(body))
            return [
                SubprocessSide("baseline", base_src, path, peak, logs / f"baseline-{k}.log"),
                SubprocessSide("current", root, path, peak, logs / f"current-{k}.log"),
            ]

        base_reps, cur_reps = run_in_generations(cfg, processes_per_side, make_sides)
    rows = compare_paired(base_reps, cur_reps)
    result = GateResult(rows, base_reps, cur_reps, run_dir)
    if run_dir is not None:
        from sagellm.benchmarks.ci_gate import format_table

        atomic_write_json(
            run_dir / "gate.json",
            {
                "ok": result.ok,
                "preset": preset,
                "baseline_sha": baseline["git_sha"],
                "current_sha": head_sha(root),
                "current_dirty": bool(uncommitted_package_changes(root)),
                "peak_flops_per_s": peak,
                "processes_per_side": processes_per_side,
                "rows": [asdict(r) for r in rows],
                "baseline_repeats": base_reps,
                "current_repeats": cur_reps,
            },
        )
        atomic_write_text(run_dir / "gate.txt", format_table(rows) + "\n")
        _finish_gate_folder(run_dir, rows)
    return result


def _finish_gate_folder(run_dir: Path, rows) -> None:
    """The gate's run folder under the run-folder contract (kind ``gate``): the rule table,
    pass/fail counts as metrics, the report."""
    import pandas as pd

    failed = sum(not r.ok for r in rows)
    metrics = {"ok": float(failed == 0), "num_rules": len(rows), "num_failed_rules": failed}
    finish_run(run_dir, "gate", metrics, {"rules": pd.DataFrame([asdict(r) for r in rows])})
