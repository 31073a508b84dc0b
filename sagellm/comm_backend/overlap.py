"""``OverlapWindow``: async all-reduces that run while the caller computes.

``submit(t)`` starts ``all_reduce_async(t)`` and returns its handle; at most ``max_in_flight``
are pending (submitting one more first waits for the oldest). ``wait(handle)`` / ``wait_all()``
block until done and add the blocked time to ``exposed_s``. With ``comm_s`` the summed latency
of the collectives recorded on the backend's stats since the window was made (issue to
completion, so use one window per measured region),
``overlap_efficiency = 1 - exposed_s / comm_s`` is the share of communication hidden behind
compute (1 = all hidden, 0 = fully serial). The usual TP use is two
micro-batches: compute micro-batch B's layer while A's all-reduce is in flight.
"""

from __future__ import annotations

import time
from collections import deque

import torch

from sagellm.comm_backend.protocol import CommBackendProtocol, CommHandle
from sagellm.core.errors import ConfigError


class OverlapWindow:
    """A bounded window of in-flight all-reduces (see the module docstring)."""

    def __init__(self, backend: CommBackendProtocol, max_in_flight: int = 2) -> None:
        if max_in_flight < 1:
            raise ConfigError(f"overlap_window.max_in_flight must be >= 1, got {max_in_flight}")
        self.backend = backend
        self.max_in_flight = max_in_flight
        self._in_flight: deque[CommHandle] = deque()
        self.exposed_s = 0.0
        self.num_done = 0
        self._stats_start_s = backend.stats.total_s

    def submit(self, tensor: torch.Tensor) -> CommHandle:
        while len(self._in_flight) >= self.max_in_flight:
            self.wait(self._in_flight[0])
        handle = self.backend.all_reduce_async(tensor)
        self._in_flight.append(handle)
        return handle

    def wait(self, handle: CommHandle) -> torch.Tensor:
        """Block until ``handle`` (and every earlier submission) completes."""
        while self._in_flight:
            h = self._in_flight.popleft()
            t0 = time.perf_counter()
            out = h.wait()
            end = time.perf_counter()
            self.exposed_s += end - t0
            self.num_done += 1
            if h is handle:
                return out
        return handle.wait()

    def wait_all(self) -> None:
        while self._in_flight:
            self.wait(self._in_flight[-1])

    @property
    def comm_s(self) -> float:
        return self.backend.stats.total_s - self._stats_start_s

    @property
    def overlap_efficiency(self) -> float | None:
        comm = self.comm_s
        return None if comm <= 0 else max(0.0, 1.0 - self.exposed_s / comm)
