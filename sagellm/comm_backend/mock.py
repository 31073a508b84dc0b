"""In-process backend: ranks are threads of one process sharing a :class:`MockWorld`.

For unit tests of callers (a TP layer, the fusion buffer) without processes. Same semantics as
the real backends: sums in rank order (0, 1, ...) so every rank gets bitwise the same result;
a rank that never arrives makes the others raise ``CommTimeoutError`` after ``timeout_s``.
Worlds are keyed by ``CommConfig.group_name`` and dropped when every rank has closed.
"""

from __future__ import annotations

import queue
import threading

import torch

from sagellm.comm_backend.base import CommBackendBase
from sagellm.comm_backend.errors import CommTimeoutError
from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.types import CommConfig
from sagellm.core.errors import ConfigError

_WORLDS: dict[str, MockWorld] = {}
_WORLDS_LOCK = threading.Lock()


class MockWorld:
    """Rendezvous state of one mock group: a barrier, one slot per rank, p2p queues."""

    def __init__(self, world_size: int, timeout_s: float) -> None:
        self.world_size = world_size
        self.timeout_s = timeout_s
        self.barrier = threading.Barrier(world_size)
        self.slots: list[torch.Tensor | None] = [None] * world_size
        self.queues = {
            (s, d): queue.Queue() for s in range(world_size) for d in range(world_size) if s != d
        }
        self.num_open = 0

    def wait(self, op: str, rank: int) -> None:
        try:
            self.barrier.wait(self.timeout_s)
        except threading.BrokenBarrierError:
            raise CommTimeoutError(
                f"mock {op}: rank {rank} waited {self.timeout_s}s; a peer never arrived"
            ) from None


class MockBackend(CommBackendBase):
    """One rank of an in-process mock group (see the module docstring)."""

    name = "mock"

    def __init__(self, config: CommConfig, stats: CommStats | None = None) -> None:
        super().__init__(config, stats)
        with _WORLDS_LOCK:
            world = _WORLDS.get(config.group_name)
            if world is None:
                world = _WORLDS[config.group_name] = MockWorld(config.world_size, config.timeout_s)
            elif world.world_size != config.world_size:
                raise ConfigError(
                    f"comm.world_size {config.world_size} does not match the world_size "
                    f"{world.world_size} of mock group {config.group_name!r}"
                )
            world.num_open += 1
        self.world = world

    def _all_reduce(self, tensor: torch.Tensor) -> None:
        w = self.world
        w.slots[self.rank] = tensor.clone()
        w.wait("all_reduce", self.rank)
        acc = torch.zeros_like(tensor, dtype=torch.float32)
        for t in w.slots:
            acc += t
        w.wait("all_reduce", self.rank)
        tensor.copy_(acc)

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        w = self.world
        w.slots[self.rank] = tensor.clone()
        w.wait("all_gather", self.rank)
        out = torch.stack(list(w.slots))
        w.wait("all_gather", self.rank)
        return out

    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        self.world.queues[(self.rank, dst)].put(tensor.clone())

    def _recv(self, tensor: torch.Tensor, src: int) -> None:
        try:
            got = self.world.queues[(src, self.rank)].get(timeout=self.config.timeout_s)
        except queue.Empty:
            raise CommTimeoutError(
                f"mock recv: rank {self.rank} got nothing from rank {src} in "
                f"{self.config.timeout_s}s"
            ) from None
        tensor.copy_(got)

    def _barrier(self) -> None:
        self.world.wait("barrier", self.rank)

    def _close(self) -> None:
        with _WORLDS_LOCK:
            self.world.num_open -= 1
            if self.world.num_open == 0 and _WORLDS.get(self.config.group_name) is self.world:
                del _WORLDS[self.config.group_name]
