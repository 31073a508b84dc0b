"""Decision latency: time each policy call during a replay (a separate, slower pass)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from sagellm.core.types import BlockId
from sagellm.kv_policy.protocol import EvictionPolicy
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


class TimedPolicy:
    """Wraps a policy and records each call's wall time in nanoseconds, per operation."""

    def __init__(self, inner: EvictionPolicy) -> None:
        self.inner = inner
        self.name = inner.name
        self.capacity_blocks = inner.capacity_blocks
        self.samples_ns: dict[str, list[int]] = {
            "on_access": [],
            "on_miss": [],
            "on_insert": [],
            "select_victims": [],
        }

    def _timed(self, op: str, fn, *args):
        t0 = time.perf_counter_ns()
        out = fn(*args)
        self.samples_ns[op].append(time.perf_counter_ns() - t0)
        return out

    def on_access(self, block_id: BlockId) -> None:
        self._timed("on_access", self.inner.on_access, block_id)

    def on_miss(self, block_id: BlockId) -> None:
        self._timed("on_miss", self.inner.on_miss, block_id)

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._timed("on_insert", self.inner.on_insert, block_id, prefix_tokens)

    def on_remove(self, block_id: BlockId) -> None:
        self.inner.on_remove(block_id)

    def on_evictable(self, block_id: BlockId) -> None:
        self.inner.on_evictable(block_id)

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        return self._timed("select_victims", self.inner.select_victims, ctx, num_blocks)

    def __len__(self) -> int:
        return len(self.inner)


@dataclass(frozen=True)
class LatencyStats:
    """Per operation: number of calls, p50 and p99 in microseconds (None without calls)."""

    op: str
    num_calls: int
    p50_us: float | None
    p99_us: float | None


def latency_stats(timed: TimedPolicy) -> list[LatencyStats]:
    out = []
    for op, ns in timed.samples_ns.items():
        if ns:
            a = np.asarray(ns, dtype=np.float64) / 1e3
            out.append(
                LatencyStats(op, len(ns), float(np.percentile(a, 50)), float(np.percentile(a, 99)))
            )
        else:
            out.append(LatencyStats(op, 0, None, None))
    return out
