"""The contract every communication backend meets (mock, gloo, shm, nccl).

Semantics (identical on every backend, checked by the same tests):
- ``all_reduce(t)`` sums ``t`` over the ranks in place and returns it; every rank ends with
  bitwise the same values.
- ``all_gather(t)`` returns a new tensor of shape ``(world_size, *t.shape)``, row ``r`` = rank
  ``r``'s input.
- ``send(t, dst)`` / ``recv(t, src)``: point-to-point, ``recv`` fills ``t`` in place.
- ``barrier()``: returns once every rank has entered it.
- ``all_reduce_async(t)`` starts the all_reduce and returns a handle whose ``wait()`` returns
  ``t`` reduced; the caller must not touch ``t`` before that.
Every call is timed through ``stats`` (a :class:`~sagellm.comm_backend.stats.CommStats`). A dead
or missing peer raises :class:`~sagellm.comm_backend.errors.CommError` within ``timeout_s``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.types import CommConfig


@runtime_checkable
class CommHandle(Protocol):
    def wait(self) -> torch.Tensor: ...

    def is_completed(self) -> bool: ...


@runtime_checkable
class CommBackendProtocol(Protocol):
    config: CommConfig
    stats: CommStats

    @property
    def world_size(self) -> int: ...

    @property
    def rank(self) -> int: ...

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def all_reduce_async(self, tensor: torch.Tensor) -> CommHandle: ...

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def send(self, tensor: torch.Tensor, dst: int) -> None: ...

    def recv(self, tensor: torch.Tensor, src: int) -> torch.Tensor: ...

    def barrier(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class KVTransportProtocol(Protocol):
    """A connected, ordered, reliable message stream between two endpoints (tcp, shm,
    mooncake). ``send`` returns once the payload may be reused; ``recv`` returns the next
    message. A dead peer raises ``CommPeerLostError``, a silent one ``CommTimeoutError``."""

    name: str

    def send(self, header: dict, payload: torch.Tensor | None = None) -> None: ...

    def recv(self) -> tuple[dict, torch.Tensor]: ...

    def close(self) -> None: ...
