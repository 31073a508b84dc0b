"""Workload generators and trace readers; every workload is reproducible from config + seed."""

from sagellm.benchmarks.workloads.mooncake import (
    MOONCAKE_BLOCK_TOKENS,
    Trace,
    TraceFormatError,
    TraceRecord,
    read_mooncake_trace,
)

__all__ = [
    "MOONCAKE_BLOCK_TOKENS",
    "Trace",
    "TraceFormatError",
    "TraceRecord",
    "read_mooncake_trace",
]
