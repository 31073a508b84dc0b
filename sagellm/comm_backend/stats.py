"""Per-call communication statistics: the hook every collective goes through.

``CommStats.record`` is called once per completed call with its bytes and latency; the records
accumulate per step (``begin_step`` / ``end_step`` return the step's comm seconds, which the
engine puts into ``StepMetrics.comm_s``) and in total. Invariant: ``total_s`` equals the sum of
``latency_s`` over ``records`` (while ``keep_records``), and every step's ``comm_s`` is the sum
over the calls that finished inside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sagellm.comm_backend.types import CommCallRecord, CommOp

CommHook = Callable[[CommCallRecord], None]


class CommStats:
    """Thread-safe accumulator of :class:`CommCallRecord` with optional extra hooks."""

    def __init__(self, keep_records: bool = True) -> None:
        self.keep_records = keep_records
        self.records: list[CommCallRecord] = []
        self.total_s = 0.0
        self.total_bytes = 0
        self.num_calls = 0
        self._step_s = 0.0
        self._hooks: list[CommHook] = []
        self._lock = threading.Lock()

    def add_hook(self, hook: CommHook) -> None:
        """Call ``hook(record)`` after every recorded call (e.g. a tracer)."""
        self._hooks.append(hook)

    def record(
        self, op: CommOp, num_bytes: int, latency_s: float, start_s: float, backend: str
    ) -> CommCallRecord:
        rec = CommCallRecord(op, int(num_bytes), float(latency_s), float(start_s), backend)
        with self._lock:
            if self.keep_records:
                self.records.append(rec)
            self.total_s += rec.latency_s
            self.total_bytes += rec.num_bytes
            self.num_calls += 1
            self._step_s += rec.latency_s
        for hook in self._hooks:
            hook(rec)
        return rec

    def begin_step(self) -> None:
        """Start a new step: the step accumulator restarts at 0."""
        with self._lock:
            self._step_s = 0.0

    def end_step(self) -> float:
        """Comm seconds recorded since ``begin_step`` (the value of ``StepMetrics.comm_s``)."""
        with self._lock:
            s, self._step_s = self._step_s, 0.0
        return s

    def summary(self) -> dict[str, dict[str, float]]:
        """Per op: ``num_calls``, ``total_bytes``, ``total_s`` and mean ``bandwidth_bytes_per_s``
        (total bytes / total seconds)."""
        with self._lock:
            recs = list(self.records)
        out: dict[str, dict[str, float]] = {}
        for r in recs:
            d = out.setdefault(r.op, {"num_calls": 0.0, "total_bytes": 0.0, "total_s": 0.0})
            d["num_calls"] += 1
            d["total_bytes"] += r.num_bytes
            d["total_s"] += r.latency_s
        for d in out.values():
            d["bandwidth_bytes_per_s"] = d["total_bytes"] / d["total_s"] if d["total_s"] else 0.0
        return out
