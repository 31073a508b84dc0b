"""Tensor parallelism of the native engine: rank 0 is the engine, ranks 1..N-1 are processes.

Rank 0 runs everything on the engine's one path (scheduler, KV manager, prefix cache, sampler)
and its own shard of the model; each worker (a ``torch.multiprocessing`` spawn process) holds
its shard (``tp_shard``) and a KV cache of its KV heads with the same block ids. Per forward::

    rank 0                                   rank r (worker)
    ------                                   ---------------
    send (wire batch, block copies,  ----->  recv; apply the block copies to its cache
          reduction schedule)                rebuild input_ids / positions / meta (its heads)
    forward (its shard) <== all_reduce ==>   forward (its shard), 2 per layer
    logits, sample                           (no logits: only rank 0 samples)

Mirrored to the workers: every block copy rank 0 makes inside its KV tensor (copy-on-write and
defragmentation moves, ``KVPool.copy_listeners``), shipped with the next forward, which is the
next time the caches are read. Refused when ``tp_size > 1``: host/disk KV tiers, an int8 KV
cache, quantization, sparse attention and speculative decoding (ConfigError at config time),
and PD hand-off / teacher-forced scratch forwards (``TPUnsupportedError`` when called).

The reduction schedule comes from the step plan's ``all_reduce`` nodes (``plan_exec``): per
layer-part (``attn`` = o_proj, ``mlp`` = down_proj) a list of collectives, each a list of row
ranges of the flat batch. Collectives go through a ``comm_backend`` backend (``shm`` on CPU by
default), whose ``CommStats`` gives the step's ``comm_s``.

Faults: a worker that dies makes rank 0's next collective raise (the shm backend checks peers'
pids every 50 ms; ``tp_timeout_s`` bounds a silent one); rank 0 raises :class:`TPWorkerLostError`
from ``step`` and the group stays broken (so it does when rank 0 itself fails inside a
forward, e.g. out of memory: the workers' collectives are then out of step; rank 0 leaves the
group so they stop waiting). ``close()`` (and garbage collection or interpreter exit, through
``weakref.finalize``) stops the workers: a close message, then kill after 5 s.
A worker whose engine process dies sees its pipe close and exits. Workers are spawned, so a
script that builds a TP engine at import time needs the ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import secrets
import socket
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.multiprocessing as mp

from sagellm.comm_backend import CommConfig, CommError, OverlapWindow, create_backend
from sagellm.core.errors import SageLLMError
from sagellm.engines.native.linear import linear
from sagellm.engines.native.tp_shard import TPShard

# a collective = row ranges [lo, hi) of the flat batch; a schedule = the collectives of each
# row-parallel call of one forward, in call order (layer 0 attn, layer 0 mlp, layer 1 attn, ...)
Collective = list[tuple[int, int]]
Schedule = list[list[Collective]]

_CLOSE_WAIT_S = 5.0
_ids = itertools.count()


class TPWorkerLostError(SageLLMError):
    """A tensor-parallel rank died or stopped answering, or rank 0 failed inside a forward
    (the ranks' collectives are then out of step); the engine cannot step any more (close it
    and build a new one). Not a RuntimeError: it is no single request's failure."""


class TPUnsupportedError(SageLLMError, ValueError):
    """An operation that would move KV or run the model outside the ranks' mirrored path."""


class RowParallel:
    """``rp(x, w)``: the sum over ranks of ``x @ w.T`` for this rank's columns of ``w``.

    Issues the collectives of ``schedule[i]`` for the i-th call since ``start(schedule)``
    (None: one all_reduce over all rows). With ``overlap`` and more than one collective, each
    collective's rows get their own GEMM and the collective runs async while the next GEMM
    computes (``OverlapWindow``); ``exposed_s`` sums the time blocked waiting for them and
    ``hidden_s`` their latency that compute covered (latency - exposed, summed per window).
    """

    def __init__(self, backend, overlap: bool = False) -> None:
        self.backend = backend
        self.overlap = overlap
        self.schedule: Schedule | None = None
        self._call = 0
        self.exposed_s = 0.0
        self.hidden_s = 0.0

    def start(self, schedule: Schedule | None) -> None:
        self.schedule, self._call = schedule, 0

    def __call__(self, x: torch.Tensor, w) -> torch.Tensor:
        colls = self.schedule[self._call] if self.schedule is not None else None
        self._call += 1
        if colls is None or (len(colls) == 1 and colls[0] == [(0, x.shape[0])]):
            return self.backend.all_reduce(linear(x, w).contiguous())
        if self.overlap and len(colls) > 1 and all(len(c) == 1 for c in colls):
            window = OverlapWindow(self.backend, max_in_flight=len(colls))
            parts = []
            for [(lo, hi)] in colls:
                parts.append(linear(x[lo:hi], w).contiguous())
                window.submit(parts[-1])
            window.wait_all()
            self.exposed_s += window.exposed_s
            self.hidden_s += max(0.0, window.comm_s - window.exposed_s)
            return torch.cat(parts)
        y = linear(x, w).contiguous()
        for ranges in colls:
            if len(ranges) == 1:
                self.backend.all_reduce(y[ranges[0][0] : ranges[0][1]])
                continue
            packed = torch.cat([y[lo:hi] for lo, hi in ranges])
            self.backend.all_reduce(packed)
            at = 0
            for lo, hi in ranges:
                y[lo:hi] = packed[at : at + hi - lo]
                at += hi - lo
        return y


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to build its rank (picklable)."""

    model_path: str
    dtype: str
    device: str
    num_blocks: int
    block_size_tokens: int
    shard: TPShard
    comm: CommConfig
    num_threads: int
    overlap: bool


def _worker_main(spec: WorkerSpec, conn) -> None:  # runs in the spawned process
    from sagellm.engines.native.batch_inputs import wire_tensors
    from sagellm.engines.native.kv_cache import PagedKVCache
    from sagellm.engines.native.model import DecoderModel
    from sagellm.engines.native.weights import load_checkpoint

    torch.set_num_threads(spec.num_threads)
    parent = os.getppid()
    backend = None
    try:
        backend = create_backend(spec.comm)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec.dtype]
        device = torch.device(spec.device)
        ckpt = load_checkpoint(Path(spec.model_path), dtype)
        model = DecoderModel(ckpt.arch, ckpt.state_dict, dtype, device, spec.shard)
        del ckpt
        rp = model.row_parallel = RowParallel(backend, spec.overlap)
        arch = model.arch
        cache = PagedKVCache(
            arch.num_layers,
            spec.num_blocks,
            spec.block_size_tokens,
            model.num_kv_heads,
            arch.head_dim,
            dtype,
            device,
        )
        if device.type == "cpu":
            from sagellm.engines.native.kernels import paged_attention_op

            paged_attention_op()  # load (or build) the kernel now, not inside the first step
        conn.send(("ready", ""))
        while True:
            if not conn.poll(1.0):
                if os.getppid() != parent:
                    return  # the engine process is gone
                continue
            msg = conn.recv()
            if msg[0] == "close":
                return
            _, wire, copies, schedule = msg
            for src, dst in copies:
                cache.kv[:, :, dst].copy_(cache.kv[:, :, src])
            ids, pos, meta = wire_tensors(wire, model.num_kv_heads, spec.block_size_tokens, device)
            rp.start(schedule)
            model.forward(ids, pos, meta, cache, None)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        return
    except BaseException as err:  # tell rank 0 why, then leave (the group is broken)
        with contextlib.suppress(Exception):
            conn.send(("error", f"rank {spec.shard.rank}: {type(err).__name__}: {err}"))
    finally:
        if backend is not None:
            backend.close()


def rank_threads(num_threads: int | None, tp_size: int) -> int | None:
    """torch threads per rank: ``num_threads`` when set; else, with TP, the host's cores split
    evenly over the ranks (as ``run_ranks`` does: more threads than cores makes spinning
    waiters and OpenMP workers fight); else None (torch's default)."""
    if num_threads is None and tp_size > 1:
        return max(1, len(os.sched_getaffinity(0)) // tp_size)
    return num_threads


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shutdown(procs, conns, backend) -> None:
    """Stop the workers (close message, then kill) and leave the group; idempotent."""
    for c in conns:
        with contextlib.suppress(Exception):
            c.send(("close",))
    deadline = time.monotonic() + _CLOSE_WAIT_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    for c in conns:
        c.close()
    if backend is not None:
        backend.close()


class TPGroup:
    """Rank 0's handle on the workers: start, one forward per step, close (see module doc)."""

    def __init__(
        self,
        model_path: str,
        dtype: str,
        device: torch.device,
        num_blocks: int,
        block_size_tokens: int,
        shards: list[TPShard],
        backend_name: str,
        timeout_s: float,
        num_threads: int,
        overlap: bool,
    ) -> None:
        tp = len(shards)
        comm = CommConfig(
            world_size=tp,
            rank=0,
            backend=backend_name,
            master_port=_free_port() if backend_name in ("gloo", "nccl") else 29_500,
            group_name=f"tp{os.getpid()}x{next(_ids)}x{secrets.token_hex(3)}",
            timeout_s=timeout_s,
        )
        ctx = mp.get_context("spawn")
        self.procs, self.conns = [], []
        self.backend = None
        self._finalizer = weakref.finalize(self, _shutdown, self.procs, self.conns, None)
        for r in range(1, tp):
            dev = "cpu"
            if device.type == "cuda":  # one GPU per rank where there are enough
                dev = f"cuda:{r % max(1, torch.cuda.device_count())}"
            spec = WorkerSpec(
                model_path,
                dtype,
                dev,
                num_blocks,
                block_size_tokens,
                shards[r],
                dataclasses.replace(comm, rank=r),
                num_threads,
                overlap,
            )
            mine, theirs = ctx.Pipe(duplex=True)
            p = ctx.Process(target=_worker_main, args=(spec, theirs), daemon=True)
            p.start()
            theirs.close()
            self.procs.append(p)
            self.conns.append(mine)
        try:
            self.backend = create_backend(comm)
            self._finalizer.detach()
            self._finalizer = weakref.finalize(
                self, _shutdown, self.procs, self.conns, self.backend
            )
            self._await_ready(timeout_s)
        except BaseException:
            self.close()
            raise
        self.row_parallel = RowParallel(self.backend, overlap)
        self.broken: str | None = None
        self.timeout_s = timeout_s
        self.num_block_copies = 0  # KV block copies mirrored to the workers
        self.pending_copies: list[tuple[int, int]] = []  # made since the last forward

    def mirror_block_copies(self, pool) -> None:
        """Replay every block copy inside rank 0's KV pool (copy-on-write, defrag moves) on the
        workers' caches, with the next forward: the next time any cache is read."""
        pending = self.pending_copies  # the listener holds the list, not self (no cycle)
        pool.copy_listeners.append(lambda src, dst: pending.append((src, dst)))

    @classmethod
    def start(cls, cfg, path, device: torch.device, num_blocks: int, shards, threads: int):
        """The group for an ``EngineConfig`` (``tp_comm_backend`` "auto": nccl on CUDA, our shm
        backend on CPU); blocks until every rank loaded its shard."""
        name = cfg.tp_comm_backend
        if name == "auto":
            name = "nccl" if device.type == "cuda" else "shm"
        return cls(
            str(path),
            cfg.model.dtype,
            device,
            num_blocks,
            cfg.block_size_tokens,
            shards,
            name,
            cfg.tp_timeout_s,
            threads,
            cfg.tp_overlap_all_reduce,
        )

    def _await_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s + 60.0  # model loading comes on top
        for r, (p, c) in enumerate(zip(self.procs, self.conns, strict=True), start=1):
            while not c.poll(0.1):
                if not p.is_alive() or time.monotonic() > deadline:
                    raise TPWorkerLostError(f"tp rank {r} did not start (exit code {p.exitcode})")
            kind, text = c.recv()
            if kind != "ready":
                raise TPWorkerLostError(f"tp rank {r} failed to start: {text}")

    @property
    def stats(self):
        """Rank 0's :class:`~sagellm.comm_backend.CommStats`."""
        return self.backend.stats

    def _lost(self, why: str) -> TPWorkerLostError:
        notes = []
        for r, (p, c) in enumerate(zip(self.procs, self.conns, strict=True), start=1):
            try:
                while c.poll(0):
                    kind, *rest = c.recv()
                    if kind == "error":
                        notes.append(rest[0])
            except (EOFError, OSError):
                pass
            if not p.is_alive():
                notes.append(f"rank {r} exited with code {p.exitcode}")
        self.broken = f"tensor-parallel group is broken: {why}" + (
            f" ({'; '.join(notes)})" if notes else ""
        )
        self.backend.close()  # rank 0 leaves: workers waiting on it stop now, not at timeout
        return TPWorkerLostError(self.broken)

    def forward(self, model, inputs, cache, schedule: Schedule):
        """Rank 0's forward with every worker running its shard of the same batch (after the
        pending block copies); returns rank 0's logits. Raises TPWorkerLostError when a rank
        is gone (within the backend's liveness checks, or ``tp_timeout_s`` for a silent one)."""
        if self.broken is not None:
            raise TPWorkerLostError(self.broken)
        copies = list(self.pending_copies)
        self.pending_copies.clear()
        msg = ("step", inputs.wire, copies, schedule)
        self.num_block_copies += len(copies)
        for r, (p, c) in enumerate(zip(self.procs, self.conns, strict=True), start=1):
            if not p.is_alive():
                raise self._lost(f"rank {r} is not running")
            try:
                c.send(msg)
            except (BrokenPipeError, EOFError, OSError) as err:
                raise self._lost(f"rank {r}: {err}") from None
        self.row_parallel.start(schedule)
        try:
            return model.forward(
                inputs.input_ids, inputs.positions, inputs.meta, cache, inputs.logits_index
            )
        except CommError as err:
            raise self._lost(str(err)) from err
        except Exception as err:  # rank 0 left mid-forward: the workers' collectives are now
            raise self._lost(f"rank 0: {type(err).__name__}: {err}") from err  # out of step

    def close(self) -> None:
        """Stop the workers and leave the group (idempotent)."""
        self._finalizer()
