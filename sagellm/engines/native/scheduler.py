"""Continuous batching with chunked prefill and preemption by recompute (vLLM v1 style).

Each step, every running sequence asks for its pending tokens (1 when decoding, a chunk when
prefilling) within the ``max_num_batched_tokens`` budget; then waiting sequences are admitted
FCFS while budget, ``max_num_seqs`` and KV blocks last. When a running sequence cannot get a
block, the most recently admitted running sequence is preempted (blocks freed, recomputed
later). A waiting sequence that cannot get blocks simply waits: back-pressure, never a crash.
The scheduler does not touch tensors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sagellm.engines.native.kv_cache import BlockAllocator
from sagellm.engines.native.sequence import SeqStatus, Sequence


@dataclass
class ScheduledBatch:
    """This step's work: ``(sequence, num_new_tokens)`` pairs in flat-token order."""

    items: list[tuple[Sequence, int]] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.items)


class Scheduler:
    def __init__(
        self,
        allocator: BlockAllocator,
        block_size_tokens: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        enable_chunked_prefill: bool,
    ) -> None:
        self.allocator = allocator
        self.block_size = block_size_tokens
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.chunked = enable_chunked_prefill
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _blocks_needed(self, seq: Sequence, num_new: int) -> int:
        total = seq.num_computed_tokens + num_new
        return max(0, -(-total // self.block_size) - len(seq.block_ids))

    def _grow(self, seq: Sequence, num_new: int) -> bool:
        need = self._blocks_needed(seq, num_new)
        if need == 0:
            return True
        got = self.allocator.allocate(need)
        if got is None:
            return False
        seq.block_ids.extend(got)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.allocator.free(seq.block_ids)
        seq.block_ids = []
        seq.num_computed_tokens = 0
        seq.status = SeqStatus.WAITING
        seq.metrics.preemptions += 1
        self.waiting.appendleft(seq)

    def release(self, seq: Sequence) -> None:
        """Free a finished or aborted sequence's blocks and drop it from the queues."""
        if seq.block_ids:
            self.allocator.free(seq.block_ids)
            seq.block_ids = []
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        scheduled: list[Sequence] = []
        queue = list(self.running)
        while queue and budget > 0:
            seq = queue.pop(0)
            num_new = min(seq.num_pending_tokens, budget)
            while not self._grow(seq, num_new):
                victim = queue.pop() if queue else seq
                self.running.remove(victim)
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                break
            batch.items.append((seq, num_new))
            scheduled.append(seq)
            budget -= num_new
        if not batch.preempted:
            self._admit(batch, budget)
        return batch

    def _admit(self, batch: ScheduledBatch, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            num_new = seq.num_pending_tokens
            if num_new > budget:
                if not self.chunked:
                    break
                num_new = budget
            if not self._grow(seq, num_new):
                break  # back-pressure: wait for blocks to free up
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            batch.items.append((seq, num_new))
            budget -= num_new

    def apply_plan(
        self, items: list[tuple[Sequence, int]], preempt: list[Sequence]
    ) -> ScheduledBatch | None:
        """Carry out an externally decided step (a scheduling-IR plan): preempt ``preempt``
        (running sequences, recomputed later), then give every ``(seq, num_new)`` its blocks
        and mark it running. Returns None, changing nothing, when the KV blocks would not fit.
        """
        freed = sum(len(s.block_ids) for s in preempt)
        need = sum(
            -(-n // self.block_size) if s in preempt else self._blocks_needed(s, n)
            for s, n in items
        )
        if need > self.allocator.num_free + freed:
            return None
        batch = ScheduledBatch(preempted=list(preempt))
        for seq in preempt:
            self.running.remove(seq)
            self._preempt(seq)
        for seq, n in items:
            if not self._grow(seq, n):
                raise RuntimeError(f"block accounting broke for {seq.request_id!r}")
            if seq.status is SeqStatus.WAITING:
                self.waiting.remove(seq)
                seq.status = SeqStatus.RUNNING
                self.running.append(seq)
            batch.items.append((seq, n))
        return batch
