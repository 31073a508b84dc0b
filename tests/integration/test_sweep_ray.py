"""``sagellm sweep --backend ray``: points as Ray tasks on a local cluster this test starts
(``ray start --head`` on 127.0.0.1). A failing point completes the others; a worker killed
mid-point leaves that point failed with no half-written result, and a rerun retries it; the
table equals the local backend's. Ray missing or an address that does not answer: one clear
error."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from sagellm.benchmarks.sweep import run_sweep
from sagellm.cli import main
from sagellm.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SOURCE = """import json, os, pathlib, time
from sagellm.core.io import atomic_write_json
assert x != 3, "point x=3 fails on purpose"
out = pathlib.Path(results_root) / "toy" / f"run{x}"
if x == 2:  # half of a result, then wait for the gate (the test kills this point's worker)
    atomic_write_json(out / "partial.json", {"x": x})
    while not pathlib.Path(gate).exists():
        time.sleep(0.05)
atomic_write_json(out / "metrics.json", {"num_requests": 1, "num_completed": 1, "value": x * 10})"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End the ``ray start`` process group this test started (by its id)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def _tail(log_dir: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(log_dir.glob("*.log")))


def _start_head(log: Path, env: dict) -> tuple[subprocess.Popen, str | None]:
    """One ``ray start --head --block`` on 127.0.0.1 (2 CPUs, every agent port fixed); the
    process and its GCS address once the head answers, or None when it exited."""
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
    cmd += ["--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    cmd += ["--include-dashboard", "false", "--disable-usage-stats"]
    for opt in ("--dashboard-agent-listen-port", "--dashboard-agent-grpc-port"):
        cmd += [opt, str(_free_port())]
    cmd += ["--metrics-export-port", str(_free_port())]
    cmd += ["--runtime-env-agent-port", str(_free_port())]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        if b"Ray runtime started" in log.read_bytes():
            return proc, f"127.0.0.1:{port}"
        time.sleep(0.3)
    _stop(proc)
    return proc, None


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs, in its own process group
    (stopped by its id at the end); yields the GCS address."""
    ray = pytest.importorskip("ray")
    fast = Path(__file__).parent / "ray_fast_start"  # see its rfc3987_syntax.py
    env = {**os.environ, "PYTHONPATH": f"{fast}:{REPO}", "RAY_USAGE_STATS_ENABLED": "0"}
    env.update(RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # the driver (this process) joins without a token
    log_dir = tmp_path_factory.mktemp("ray")
    proc = None
    try:
        # the raylet gives its agents 15 s to start; on a loaded machine one attempt can miss
        # that, so up to three
        for attempt in range(3):
            proc, address = _start_head(log_dir / f"ray_start{attempt}.log", env)
            if address is not None:
                break
        else:
            raise RuntimeError(f"Ray did not come up:\n{_tail(log_dir)}")
        yield address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if proc is not None:
            _stop(proc)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def _grid(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('x = 0\nresults_root = "results"\ngate = "gate"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(SOURCE)]
    spec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = spec
    nbformat.write(nb, tmp_path / "toy.ipynb")
    (tmp_path / "grid.yaml").write_text(
        "name: toy\nnotebook: toy.ipynb\nworkers: 2\ncpus_per_point: 1\n"
        f"parameters: {{gate: '{tmp_path / 'gate'}'}}\ngrid: {{x: [1, 2, 3]}}\n"
        "summary_metric: value\n"
    )
    return tmp_path / "grid.yaml"


def _kill_point_worker(root: Path, done: threading.Event) -> int:
    """Wait for point x=2's half result in its staging folder; SIGKILL the Ray worker
    running it (the pid its worker.json names); returns that pid."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not done.is_set():
        for partial in (root / "points" / ".staging").glob("*/results/toy/run2/partial.json"):
            pid = json.loads((partial.parents[3] / "worker.json").read_text())["pid"]
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.1)
    raise AssertionError("point x=2 never started")


@pytest.mark.slow
def test_ray_sweep_isolates_failures_and_killed_workers(ray_cluster, tmp_path, monkeypatch):
    grid = _grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    res = tmp_path / "ray"
    root = res / "sweeps" / "toy"
    out: dict = {}
    done = threading.Event()

    def sweep() -> None:
        try:
            out["df"] = run_sweep(grid, res, progress=False, backend="ray", address=ray_cluster)
        finally:
            done.set()

    t = threading.Thread(target=sweep)
    t.start()
    killed = _kill_point_worker(root, done)
    t.join(180)
    assert not t.is_alive()
    by_x = {int(r["param.x"]): r for _, r in out["df"].iterrows()}
    assert by_x[1]["status"] == "ok" and by_x[1]["value"] == 10
    assert by_x[3]["status"] == "failed" and "fails on purpose" in by_x[3]["error"]
    assert by_x[2]["status"] == "failed" and "Worker" in by_x[2]["error"], by_x[2]["error"]
    killed_dir = root / "points" / by_x[2]["point_id"]
    assert {p.name for p in killed_dir.iterdir()} == {"status.json"}  # no half result
    assert not list((root / "points" / ".staging").glob("*")), "staging left behind"
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    # rerun: the killed point runs again (its gate now open), ok points are skipped
    ok_status = root / "points" / by_x[1]["point_id"] / "status.json"
    mtime = ok_status.stat().st_mtime_ns
    (tmp_path / "gate").write_text("open")
    df = run_sweep(grid, res, progress=False, backend="ray", address=ray_cluster)
    assert ok_status.stat().st_mtime_ns == mtime
    by_x = {int(r["param.x"]): r for _, r in df.iterrows()}
    assert by_x[2]["status"] == "ok" and by_x[2]["value"] == 20
    assert (df["status"] == "failed").sum() == 1
    # the same table as the local backend (but for the wall times)
    local = run_sweep(grid, tmp_path / "local", progress=False, backend="local")
    cols = [c for c in df.columns if c not in ("point_wall_s", "error")]
    assert sorted(df.columns) == sorted(local.columns)
    assert df[cols].equals(local[cols])
    # the sweep folder is a run folder `sagellm report` reads
    assert main(["report", str(root)]) == 0
    report = (root / "report.md").read_text()
    assert "kind: sweep" in report and "| num_failed_points | 1 |" in report


def test_ray_backend_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    grid = _grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    rc = main(["sweep", str(grid), "--results", str(tmp_path / "r"), "--backend", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and "pip install 'sagellm[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before touching the results folder


def test_unanswering_ray_address_times_out_clearly(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    grid = _grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    dead = f"127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    rc = main(["sweep", str(grid), "--results", str(tmp_path / "r"), "--backend", "ray",
               "--address", dead, "--connect-timeout-s", "2"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and f"the Ray cluster at '{dead}' did not answer within 2 s" in err
    assert time.monotonic() - t0 < 30
    with pytest.raises(ConfigError, match="address must be"):
        run_sweep(grid, tmp_path / "r", progress=False, backend="ray", address="nonsense")
