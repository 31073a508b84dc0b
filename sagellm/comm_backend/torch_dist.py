"""``gloo`` and ``nccl``: torch.distributed process groups behind the same protocol.

Rendezvous is a ``TCPStore`` on ``master_addr:master_port`` hosted by rank 0. Before the process
group forms, every rank checks through the store that all ranks agree on ``world_size`` (a
mismatch is a ``ConfigError`` naming both numbers) and rank 0 checks that the port is free.
gloo runs on CPU tensors; nccl needs CUDA tensors on ``cuda:<rank % device_count>``. Errors
from torch (a peer's closed connection, gloo's timeout) are re-raised as ``CommPeerLostError`` /
``CommTimeoutError`` naming the op and rank. One process holds at most one such group (the
default process group).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from sagellm.comm_backend.base import CommBackendBase
from sagellm.comm_backend.errors import CommError, CommPeerLostError, CommTimeoutError
from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.types import CommConfig
from sagellm.core.errors import ConfigError


def check_port_free(addr: str, port: int) -> None:
    """Raise ``ConfigError`` when ``addr:port`` cannot be bound (another process holds it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((addr, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"comm.master_port {port} on {addr} is already in use; pick a free port"
            ) from None
        raise
    finally:
        s.close()


class _DistHandle:
    def __init__(self, work, tensor: torch.Tensor, backend: TorchDistBackend, start: float):
        self._work, self._tensor, self._backend, self._start = work, tensor, backend, start
        self._done = False

    def wait(self) -> torch.Tensor:
        if not self._done:
            self._backend._guard("all_reduce", self._work.wait)
            self._done = True
            nbytes = self._tensor.numel() * self._tensor.element_size()
            self._backend.stats.record(
                "all_reduce",
                nbytes,
                time.perf_counter() - self._start,
                self._start,
                self._backend.name,
            )
        return self._tensor

    def is_completed(self) -> bool:
        return self._done or self._work.is_completed()


class TorchDistBackend(CommBackendBase):
    """One rank of a gloo or nccl group (see the module docstring)."""

    def __init__(self, config: CommConfig, stats: CommStats | None = None) -> None:
        super().__init__(config, stats)
        self.name = config.backend
        if config.backend == "nccl" and not torch.cuda.is_available():
            raise ConfigError("comm.backend 'nccl' needs CUDA; use 'gloo' or 'shm' on CPU")
        if dist.is_initialized():
            raise ConfigError("comm.backend: this process already holds a torch.distributed group")
        timeout = timedelta(seconds=config.timeout_s)
        if config.rank == 0:
            check_port_free(config.master_addr, config.master_port)
        try:
            self.store = dist.TCPStore(
                config.master_addr,
                config.master_port,
                config.world_size,
                is_master=config.rank == 0,
                timeout=timeout,
                wait_for_workers=False,
            )
        except (RuntimeError, dist.DistError) as e:
            raise CommTimeoutError(
                f"{self.name}: rank {config.rank} could not reach the store at "
                f"{config.master_addr}:{config.master_port} within {config.timeout_s}s ({e})"
            ) from None
        self._check_world_size()
        self.device = torch.device("cpu")
        if config.backend == "nccl":
            self.device = torch.device("cuda", config.rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        self._guard(
            "init",
            dist.init_process_group,
            config.backend,
            store=self.store,
            rank=config.rank,
            world_size=config.world_size,
            timeout=timeout,
        )

    def _check_world_size(self) -> None:
        key = f"sagellm/{self.config.group_name}/world_size"
        if self.config.rank == 0:
            self.store.set(key, str(self.config.world_size))
            return
        try:
            theirs = int(self.store.get(key))
        except (RuntimeError, dist.DistError):
            raise CommTimeoutError(
                f"{self.name}: rank {self.rank} got no world_size from rank 0 in "
                f"{self.config.timeout_s}s"
            ) from None
        if theirs != self.config.world_size:
            raise ConfigError(
                f"comm.world_size {self.config.world_size} does not match rank 0's "
                f"world_size {theirs}"
            )

    def _guard(self, op: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CommError:
            raise
        except (RuntimeError, dist.DistError) as e:
            msg = str(e)
            lost = any(k in msg for k in ("closed", "reset", "Broken pipe", "EOF", "refused"))
            timed_out = "timeout" in msg.lower() or "timed out" in msg.lower()
            cls = CommPeerLostError if lost else CommTimeoutError if timed_out else CommError
            raise cls(f"{self.name} {op}: rank {self.rank} failed: {msg.splitlines()[0]}") from e

    def _check_tensor(self, tensor: torch.Tensor, field: str = "tensor") -> None:
        super()._check_tensor(tensor, field)
        if tensor.device.type != self.device.type:
            from sagellm.core.errors import InvalidRequestError

            raise InvalidRequestError(
                f"{field}.device must be {self.device.type} for {self.name}, got {tensor.device}"
            )

    def all_reduce_async(self, tensor: torch.Tensor) -> _DistHandle:
        self._check_tensor(tensor)
        start = time.perf_counter()
        work = self._guard("all_reduce", dist.all_reduce, tensor, async_op=True)
        return _DistHandle(work, tensor, self, start)

    def _all_reduce(self, tensor: torch.Tensor) -> None:
        self._guard("all_reduce", dist.all_reduce, tensor)

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        out = torch.empty((self.world_size, *tensor.shape), dtype=tensor.dtype, device=self.device)
        self._guard("all_gather", dist.all_gather, list(out.unbind(0)), tensor)
        return out

    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        self._guard("send", dist.send, tensor, dst)

    def _recv(self, tensor: torch.Tensor, src: int) -> None:
        self._guard("recv", dist.recv, tensor, src)

    def _barrier(self) -> None:
        # a tiny all_reduce: gloo's barrier has no per-call timeout handling of its own
        self._guard("barrier", dist.all_reduce, torch.zeros(1, device=self.device))

    def _close(self) -> None:
        if dist.is_initialized():
            with contextlib.suppress(RuntimeError, dist.DistError):
                dist.destroy_process_group()
        self.store = None
