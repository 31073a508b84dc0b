"""One sweep point: a papermill execution of the notebook in a subprocess, staged so that a
point is either wholly there or not there at all.

A point runs in ``points/.staging/<point_id>-<token>/`` (``worker.json`` names the process
running it; the notebook's ``results_root`` points into that folder). When papermill ends,
``status.json`` (ok or failed with the error) is written there and the folder is renamed to
``points/<point_id>/`` (replacing an earlier failed attempt). A failed point keeps its
executed notebook and ``papermill.log`` but not its ``results/``, so a table never mixes in
a half-finished run. A process killed mid-point leaves only its staging folder, which the next
sweep removes; :func:`record_failure` then marks the point failed, and a rerun retries it.

The papermill subprocess dies with the process that started it (``PR_SET_PDEATHSIG`` on
Linux), and its kernel with papermill (ipykernel's parent poller).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from sagellm.benchmarks.widgets import drop_widget_state
from sagellm.core.io import atomic_write_json

STAGING = ".staging"
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the forked child before exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def new_token() -> str:
    """A fresh attempt token (the suffix of a staging folder)."""
    return uuid.uuid4().hex[:8]


def staging_dir(root: Path, pid: str, token: str) -> Path:
    return root / "points" / STAGING / f"{pid}-{token}"


def _error_line(log: str) -> str:
    """The notebook's exception line from papermill's stderr (its last error-looking line)."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.endswith(("Error", "Exception", "Interrupt")) or head == "AssertionError":
            return ln
    return lines[-1] if lines else "papermill failed without output"


def _publish(root: Path, pid: str, stage: Path) -> None:
    final = root / "points" / pid
    if final.exists():
        shutil.rmtree(final)  # an earlier failed attempt (ok points are never rerun)
    os.rename(stage, final)


def run_point(
    notebook: str,
    params: dict[str, object],
    root: str,
    pid: str,
    token: str,
    cwd: str,
    timeout_s: float | None = None,
) -> dict[str, object]:
    """Run one point (see the module docstring); returns its status dict. Never raises for a
    failing notebook: the failure is its status."""
    root_p = Path(root)
    stage = staging_dir(root_p, pid, token)
    stage.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stage / "worker.json", {"pid": os.getpid(), "host": socket.gethostname()})
    (stage / "params.yaml").write_text(
        yaml.safe_dump({**params, "results_root": str(stage / "results")})
    )
    cmd = [sys.executable, "-m", "papermill", str(Path(cwd) / notebook)]
    cmd += [str(stage / "executed.ipynb"), "-f", str(stage / "params.yaml"), "-k", "python3"]
    cmd += ["--cwd", cwd, "--no-progress-bar", "--log-level", "WARNING"]
    if timeout_s is not None:
        cmd += ["--execution-timeout", str(int(timeout_s))]
    t0 = time.perf_counter()
    with open(stage / "papermill.log", "wb") as log:
        rc = subprocess.run(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, preexec_fn=_die_with_parent
        ).returncode
    status: dict[str, object] = {"point_id": pid, "params": params}
    status["wall_s"] = time.perf_counter() - t0
    if rc == 0:
        status["status"] = "ok"
        drop_widget_state(stage / "executed.ipynb")  # static HTML: widget notes, not blanks
    else:
        text = (stage / "papermill.log").read_text(errors="replace")
        status["status"] = "failed"
        status["error"] = f"{_error_line(text)} (papermill exit {rc})"[:4000]
        status["log_tail"] = text[-4000:]
        shutil.rmtree(stage / "results", ignore_errors=True)
    atomic_write_json(stage / "status.json", status)
    _publish(root_p, pid, stage)
    return status


def record_failure(root: Path, pid: str, token: str, params: dict, error: str) -> dict:
    """Mark a point failed whose runner died (no status of its own): its staging folder is
    removed, ``points/<pid>/status.json`` says why; a rerun retries the point."""
    shutil.rmtree(staging_dir(root, pid, token), ignore_errors=True)
    final = root / "points" / pid
    if final.exists():
        shutil.rmtree(final)
    status = {"point_id": pid, "params": params, "status": "failed", "error": error[:4000]}
    atomic_write_json(final / "status.json", status)
    return status


def clear_staging(root: Path) -> None:
    """Remove staging folders left by points whose process died (call before a sweep runs)."""
    shutil.rmtree(root / "points" / STAGING, ignore_errors=True)
