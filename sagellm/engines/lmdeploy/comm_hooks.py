"""Per-call statistics of LMDeploy's collectives (patch 0004 on lmdeploy/pytorch/distributed.py).

Every module-level ``all_reduce`` / ``all_gather`` / ``broadcast`` / ``reduce_scatter`` reports
``(op, num_bytes, latency_s)``: bytes are this rank's payload, latency the host wall time of the
call (only the launch for ``async_op=True``). Under CUDA graphs the Python wrappers run only at
capture, so these numbers exist in eager mode only (``eager_mode=True`` in LMDeploy's
``PytorchEngineConfig``). ``sagellm.comm_backend`` has no statistics type yet; this is the record
it will consume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CollectiveStats:
    """Totals of one collective op."""

    num_calls: int = 0
    num_bytes: int = 0
    total_s: float = 0.0


@dataclass
class CommCallStats:
    """Collective calls seen through the hook, by op name."""

    by_op: dict[str, CollectiveStats] = field(default_factory=dict)

    def __call__(self, op: str, num_bytes: int, latency_s: float) -> None:
        s = self.by_op.setdefault(op, CollectiveStats())
        s.num_calls += 1
        s.num_bytes += int(num_bytes)
        s.total_s += latency_s

    def attach(self, distributed_module: Any) -> Callable[[], None]:
        """Register on ``lmdeploy.pytorch.distributed``; returns the function that detaches."""
        if not hasattr(distributed_module, "register_comm_hook"):
            raise TypeError("this lmdeploy has no sagellm comm hooks (patch 0004)")
        return distributed_module.register_comm_hook(self)
