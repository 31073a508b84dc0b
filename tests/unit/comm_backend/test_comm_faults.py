"""Faults: a rank killed mid-collective or mid-transfer gives every survivor a clear error well
within its timeout (never a hang), and no shared-memory segment or process is left; a world
size mismatch and a port in use are ConfigErrors naming the numbers."""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from sagellm.comm_backend import (
    CommConfig,
    CommError,
    CommPeerLostError,
    CommTimeoutError,
    RankFailedError,
    create_backend,
    open_kv_channel,
    run_ranks,
)
from sagellm.core.errors import ConfigError

TIMEOUT_S = 20.0  # survivors must fail much sooner than this: the dead peer is detected


def _die_mid_collective(be, victim: int):
    if be.rank == victim:  # killed by a timer while inside the loop of collectives
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
    x = torch.ones(64 * 1024)
    t0 = time.monotonic()
    try:
        while True:
            be.all_reduce(x.fill_(1.0))
            if time.monotonic() - t0 > 3 * TIMEOUT_S:
                return ("no error", "", time.monotonic() - t0)
    except CommError as e:
        return (type(e).__name__, str(e), time.monotonic() - t0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend", ["shm", "gloo"])
def test_rank_killed_mid_collective(backend):
    group = f"t-kill-{backend}"
    cfg = CommConfig(3, 0, backend, group_name=group, master_port=_free_port(), timeout_s=TIMEOUT_S)
    with pytest.raises(RankFailedError) as e:
        run_ranks(_die_mid_collective, cfg, args=(2,), timeout_s=4 * TIMEOUT_S)
    err = e.value
    assert set(err.results) == {0, 1}, err  # both survivors returned, rank 2 did not
    assert err.errors[2][0] == "Exited"
    for kind, msg, elapsed_s in err.results.values():
        assert kind in {"CommPeerLostError", "CommTimeoutError", "CommError"}, (kind, msg)
        assert elapsed_s < TIMEOUT_S + 5, elapsed_s
        if backend == "shm":
            assert kind == "CommPeerLostError" and "rank 2" in msg
            assert elapsed_s < TIMEOUT_S / 2  # found dead by pid, not by the timeout
    assert not Path(f"/dev/shm/sagellm_{group}").exists()


def test_shm_world_size_mismatch():
    cfg0 = CommConfig(2, 0, "shm", group_name="t-mismatch", timeout_s=2.0)
    errs = []

    def rank0():
        try:
            create_backend(cfg0)
        except CommError as e:
            errs.append(e)

    t = threading.Thread(target=rank0)
    t.start()
    time.sleep(0.2)  # let rank 0 create the segment
    with pytest.raises(ConfigError, match=r"comm.world_size 3 .* world_size 2"):
        create_backend(CommConfig(3, 1, "shm", group_name="t-mismatch", timeout_s=2.0))
    t.join()
    assert isinstance(errs[0], CommTimeoutError) and "rank 1" in str(errs[0])
    assert not Path("/dev/shm/sagellm_t-mismatch").exists()


def test_gloo_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"comm.master_port {port} .* already in use"):
            create_backend(CommConfig(2, 0, "gloo", master_port=port))


def _gloo_join(be):
    return be.world_size


def test_gloo_world_size_mismatch():
    cfg = CommConfig(2, 0, "gloo", master_port=_free_port(), timeout_s=3.0)
    with pytest.raises(RankFailedError) as e:
        run_ranks(_gloo_join, cfg, world_sizes=[2, 3], timeout_s=60)
    assert e.value.errors[1][0] == "ConfigError"
    assert "comm.world_size 3 does not match rank 0's world_size 2" in e.value.errors[1][1]
    assert e.value.errors[0][0] in {"CommTimeoutError", "CommError"}


def _sender_dies(port: int, transport: str) -> None:
    caches = [torch.randn(256, 4096) for _ in range(2)]
    ch = open_kv_channel("p", caches, transport=transport, listen=False, port=port,
                         timeout_s=30)  # fmt: skip
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGKILL)).start()
    while True:
        ch.transfer(ch.make_plan("d", list(range(256))))


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_sender_killed_mid_transfer(transport):
    import torch.multiprocessing as mp

    before = {p.name for p in Path("/dev/shm").glob("sagellm_kv_*")}
    port = _free_port()
    p = mp.get_context("spawn").Process(target=_sender_dies, args=(port, transport), daemon=True)
    p.start()
    caches = [torch.zeros(256, 4096) for _ in range(2)]
    try:
        ch = open_kv_channel("d", caches, transport=transport, listen=True, port=port,
                             timeout_s=TIMEOUT_S)  # fmt: skip
        t0 = time.monotonic()
        with pytest.raises(CommPeerLostError):
            while True:
                ch.receive()
        assert time.monotonic() - t0 < TIMEOUT_S
        ch.close()
    finally:
        p.join(timeout=30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == -signal.SIGKILL
    assert {p.name for p in Path("/dev/shm").glob("sagellm_kv_*")} <= before
