"""The native engine's request queues: waiting (FCFS order, preempted requests first) and
running (admission order). Who runs, and how many tokens, is decided by the configured
scheduling strategy (``sagellm.scheduler_ir.strategies``); the queues only keep state.

Invariants: a sequence is in at most one queue; ``running`` sequences hold KV blocks (or are
loading their cached prefix); ``waiting`` ones hold none. The queues do not touch tensors.
"""

from __future__ import annotations

from collections import deque

from sagellm.engines.native.kv_manager import NativeKVManager
from sagellm.engines.native.sequence import SeqStatus, Sequence


class RequestQueues:
    def __init__(self, kv: NativeKVManager) -> None:
        self.kv = kv
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def sequences(self) -> list[Sequence]:
        """Running (admission order), then waiting (queue order)."""
        return [*self.running, *self.waiting]

    def start(self, seq: Sequence) -> None:
        """A waiting sequence was admitted (it holds its blocks now)."""
        self.waiting.remove(seq)
        seq.status = SeqStatus.RUNNING
        self.running.append(seq)

    def unadmit(self, seq: Sequence) -> None:
        """Give back what a sequence got in a failed admission; it waits at the front."""
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
            self.waiting.appendleft(seq)
        seq.status = SeqStatus.WAITING

    def preempt(self, seq: Sequence) -> None:
        """Drop a running sequence's KV (recomputed later, cached blocks may be reused)."""
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SeqStatus.WAITING
        seq.metrics.preemptions += 1
        self.waiting.appendleft(seq)

    def release(self, seq: Sequence) -> None:
        """Free a finished or aborted sequence's blocks and drop it from the queues."""
        self.kv.free(seq)
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
