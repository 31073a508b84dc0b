"""Workload generators and trace readers; every workload is reproducible from config + seed."""

from sagellm.benchmarks.workloads.generate import WorkloadRequest, arrival_offsets, build_workload
from sagellm.benchmarks.workloads.mooncake import (
    MOONCAKE_BLOCK_TOKENS,
    Trace,
    TraceFormatError,
    TraceRecord,
    read_mooncake_trace,
)
from sagellm.benchmarks.workloads.spec import (
    ArrivalConfig,
    LengthDist,
    TraceConfig,
    WorkloadConfig,
)

__all__ = [
    "MOONCAKE_BLOCK_TOKENS",
    "ArrivalConfig",
    "LengthDist",
    "Trace",
    "TraceConfig",
    "TraceFormatError",
    "TraceRecord",
    "WorkloadConfig",
    "WorkloadRequest",
    "arrival_offsets",
    "build_workload",
    "read_mooncake_trace",
]
