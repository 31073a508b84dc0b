"""Run a function on ``world_size`` ranks, each a spawned process, and collect the results.

``run_ranks(fn, config, args)`` starts one ``torch.multiprocessing`` spawn process per rank,
calls ``fn(backend, *args)`` with that rank's joined backend and returns the per-rank return
values (rank order). Each rank uses ``cores // world_size`` torch threads. A rank that
raises has its exception type and message re-raised here as
``RankFailedError`` (others' results are in ``.results``); ranks still running after
``timeout_s`` are killed, so nothing outlives the call. ``fn`` must be importable (module level).
"""

from __future__ import annotations

import dataclasses
import io
import os
import queue as queue_mod
import time
import traceback
from collections.abc import Callable

import torch
import torch.multiprocessing as mp

from sagellm.comm_backend.errors import CommError
from sagellm.comm_backend.types import CommConfig


class RankFailedError(CommError):
    """One or more ranks raised or did not finish; ``errors[rank]`` = (type name, message)."""

    def __init__(self, errors: dict[int, tuple[str, str]], results: dict[int, object]):
        self.errors, self.results = errors, results
        lines = [f"rank {r}: {t}: {m}" for r, (t, m) in sorted(errors.items())]
        super().__init__("; ".join(lines))


def _rank_main(fn, config: CommConfig, args: tuple, out) -> None:
    from sagellm.comm_backend.factory import create_backend

    # ranks share the host's cores: more compute threads than cores makes spinning waiters and
    # OpenMP workers fight (vLLM's CPU backend binds ranks to disjoint cores for the same reason)
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // config.world_size))
    try:
        with create_backend(config) as backend:
            result = fn(backend, *args)
        buf = io.BytesIO()
        torch.save(result, buf)  # bytes, not shared-memory handles that die with this process
        out.put((config.rank, "ok", buf.getvalue()))
    except BaseException as e:  # report every failure to the parent, then exit
        out.put((config.rank, type(e).__name__, f"{e}\n{traceback.format_exc(limit=3)}"))


def run_ranks(
    fn: Callable,
    config: CommConfig,
    args: tuple = (),
    timeout_s: float = 120.0,
    world_sizes: list[int] | None = None,
) -> list[object]:
    """Run ``fn(backend, *args)`` on ranks ``0..config.world_size-1`` (``config.rank`` is
    replaced per rank; ``world_sizes[r]`` overrides rank r's world_size, for mismatch tests)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = []
    for r in range(config.world_size):
        ws = world_sizes[r] if world_sizes else config.world_size
        cfg = dataclasses.replace(config, rank=min(r, ws - 1), world_size=ws)
        if world_sizes is None:
            cfg = dataclasses.replace(config, rank=r)
        p = ctx.Process(target=_rank_main, args=(fn, cfg, args, out), daemon=True)
        p.start()
        procs.append(p)
    results: dict[int, object] = {}
    errors: dict[int, tuple[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) + len(errors) < len(procs):
        try:
            rank, status, value = out.get(timeout=max(0.05, min(1.0, deadline - time.monotonic())))
        except queue_mod.Empty:
            if time.monotonic() > deadline or all(not p.is_alive() for p in procs):
                break
            continue
        if status == "ok":
            results[rank] = torch.load(io.BytesIO(value), weights_only=False)
        else:
            errors[rank] = (status, value)
    for r, p in enumerate(procs):
        p.join(timeout=max(0.0, deadline - time.monotonic()) if r in results else 0.5)
        if p.is_alive():
            p.kill()
            p.join()
        if r not in results and r not in errors:
            errors[r] = ("Exited", f"exit code {p.exitcode} without a result")
    if errors:
        raise RankFailedError(errors, results)
    return [results[r] for r in range(len(procs))]
