"""Shared body of every backend: argument checks, the stats hook around each call, and a
default ``all_reduce_async`` on one worker thread per backend.

A subclass implements ``_all_reduce``, ``_all_gather``, ``_send``, ``_recv``, ``_barrier``; the
public methods here time them (``time.perf_counter``, seconds) and record bytes into
``self.stats``. Collectives on one backend object are issued in program order: the async worker
is a single thread, and a sync call waits for pending async ones first, so every rank sees the
same sequence of collectives.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.types import CommConfig
from sagellm.core.errors import InvalidRequestError

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class FutureHandle:
    """An async collective running on the backend's worker thread."""

    def __init__(self, fut: Future) -> None:
        self._fut = fut

    def wait(self) -> torch.Tensor:
        return self._fut.result()

    def is_completed(self) -> bool:
        return self._fut.done()


class CommBackendBase:
    """Base of the concrete backends (see :mod:`sagellm.comm_backend.protocol`)."""

    name = "base"

    def __init__(self, config: CommConfig, stats: CommStats | None = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else CommStats()
        self._worker: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self.closed = False

    @property
    def world_size(self) -> int:
        return self.config.world_size

    @property
    def rank(self) -> int:
        return self.config.rank

    def _check_tensor(self, tensor: torch.Tensor, field: str = "tensor") -> None:
        if self.closed:
            raise InvalidRequestError(f"comm backend {self.name!r} rank {self.rank} is closed")
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise InvalidRequestError(
                f"{field}.dtype must be one of float32, bfloat16, got {tensor.dtype}"
            )
        if not tensor.is_contiguous():
            raise InvalidRequestError(f"{field} must be contiguous")

    def _check_peer(self, peer: int, field: str) -> None:
        if not 0 <= peer < self.world_size or peer == self.rank:
            raise InvalidRequestError(
                f"{field} must be a rank in 0..{self.world_size - 1} other than {self.rank}, "
                f"got {peer}"
            )

    def _drain(self) -> None:
        pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def _timed(self, op, num_bytes: int, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.stats.record(op, num_bytes, time.perf_counter() - start, start, self.name)
        return out

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        self._check_tensor(tensor)
        self._drain()
        if self.world_size == 1:
            return tensor
        self._timed("all_reduce", tensor_bytes(tensor), self._all_reduce, tensor)
        return tensor

    def all_reduce_async(self, tensor: torch.Tensor) -> FutureHandle:
        self._check_tensor(tensor)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix=f"comm-{self.name}")
        start = time.perf_counter()

        def run() -> torch.Tensor:
            if self.world_size > 1:
                self._all_reduce(tensor)
            self.stats.record(
                "all_reduce", tensor_bytes(tensor), time.perf_counter() - start, start, self.name
            )
            return tensor

        fut = self._worker.submit(run)
        self._pending.append(fut)
        return FutureHandle(fut)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        self._check_tensor(tensor)
        self._drain()
        if self.world_size == 1:
            return tensor.unsqueeze(0).clone()
        nbytes = tensor_bytes(tensor) * self.world_size
        return self._timed("all_gather", nbytes, self._all_gather, tensor)

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        self._check_tensor(tensor)
        self._check_peer(dst, "dst")
        self._drain()
        self._timed("send", tensor_bytes(tensor), self._send, tensor, dst)

    def recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        self._check_tensor(tensor)
        self._check_peer(src, "src")
        self._drain()
        self._timed("recv", tensor_bytes(tensor), self._recv, tensor, src)
        return tensor

    def barrier(self) -> None:
        self._drain()
        if self.world_size > 1:
            self._timed("barrier", 0, self._barrier)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._worker is not None:
            self._worker.shutdown(wait=True, cancel_futures=True)
        self._close()

    def _close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # implemented by the backends
    def _all_reduce(self, tensor: torch.Tensor) -> None:
        raise NotImplementedError

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        raise NotImplementedError

    def _recv(self, tensor: torch.Tensor, src: int) -> None:
        raise NotImplementedError

    def _barrier(self) -> None:
        raise NotImplementedError
