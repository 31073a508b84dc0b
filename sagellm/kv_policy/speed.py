"""Replay speed, ours against libCacheSim's, measured side by side (interleaved repeats).

Three loops over the same block stream and policy/capacity: our simulator; libcachesim driven
per lookup from Python (``cache.get``); libcachesim's own C loop (``process_trace`` over a
plain-text id file). Repeats alternate between them so machine noise hits all three alike;
medians are reported.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass

from sagellm.kv_policy.base import make_eviction_policy
from sagellm.kv_policy.simulator import simulate
from sagellm.kv_policy.traces import BlockTrace


@dataclass(frozen=True)
class SpeedReport:
    policy: str
    capacity_blocks: int
    num_requests: int
    num_accesses: int
    ours_requests_per_s: float  # medians over the repeats
    libcachesim_py_requests_per_s: float
    libcachesim_c_requests_per_s: float

    @property
    def ratio_vs_py(self) -> float:
        return self.ours_requests_per_s / self.libcachesim_py_requests_per_s

    @property
    def ratio_vs_c(self) -> float:
        return self.ours_requests_per_s / self.libcachesim_c_requests_per_s


def compare_replay_speed(
    trace: BlockTrace, policy: str, capacity_blocks: int, repeats: int = 3
) -> SpeedReport:
    from sagellm.kv_policy.oracle import oracle_process_trace, oracle_replay

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n = len(trace.requests)
    ours, py, c = [], [], []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(repeats):
            r = simulate(make_eviction_policy(policy, capacity_blocks), trace.requests)
            ours.append(n / r.wall_s)
            py.append(oracle_replay(policy, trace.requests, capacity_blocks).requests_per_s)
            _hit, wall_s = oracle_process_trace(policy, trace.requests, capacity_blocks, work)
            c.append(n / wall_s)
    med = statistics.median
    return SpeedReport(policy, capacity_blocks, n, trace.num_accesses, med(ours), med(py), med(c))
