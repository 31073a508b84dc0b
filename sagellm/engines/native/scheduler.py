"""Continuous batching with chunked prefill and preemption by recompute (vLLM v1 style).

Each step, every running sequence asks for its pending tokens (1 when decoding, a chunk when
prefilling) within the ``max_num_batched_tokens`` budget; then waiting sequences are admitted
FCFS while budget, ``max_num_seqs`` and KV blocks last. When a running sequence cannot get a
block, the most recently admitted running sequence is preempted (blocks freed, recomputed
later). A waiting sequence that cannot get blocks simply waits: back-pressure, never a crash.

With prefix caching, a sequence being admitted first takes its longest cached prefix from the
KV manager (its ``num_computed_tokens`` jumps to the hit) and asks for blocks for the rest.
A tenant at its hard KV quota waits while the sequences behind it are still admitted; a
running sequence whose tenant hits the quota preempts that tenant's latest sequence only.
The scheduler does not touch tensors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
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
        kv: NativeKVManager,
        block_size_tokens: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        enable_chunked_prefill: bool,
    ) -> None:
        self.kv = kv
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

    @property
    def allocator(self) -> NativeKVManager:
        """The KV manager (older name, kept for block counts in tests and stats)."""
        return self.kv

    def _grow(self, seq: Sequence, num_new: int) -> AllocStatus:
        return self.kv.allocate(seq, self._blocks_needed(seq, num_new))

    def _preempt(self, seq: Sequence) -> None:
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

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        scheduled: list[Sequence] = []
        queue = list(self.running)
        while queue and budget > 0:
            seq = queue.pop(0)
            num_new = min(seq.num_pending_tokens, budget)
            while (status := self._grow(seq, num_new)) is not AllocStatus.OK:
                victim = self._victim(seq, queue, status)
                if victim in queue:
                    queue.remove(victim)
                self.running.remove(victim)
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SeqStatus.RUNNING:
                if status is AllocStatus.OVER_QUOTA:
                    continue  # only this tenant is out of blocks
                break
            batch.items.append((seq, num_new))
            scheduled.append(seq)
            budget -= num_new
        if not batch.preempted:
            self._admit(batch, budget)
        return batch

    @staticmethod
    def _victim(seq: Sequence, queue: list[Sequence], status: AllocStatus) -> Sequence:
        """Latest-admitted running sequence; under a quota refusal, of the same tenant."""
        if status is AllocStatus.OVER_QUOTA:
            same = [s for s in queue if s.request.tenant_id == seq.request.tenant_id]
            return same[-1] if same else seq
        return queue[-1] if queue else seq

    def _admit(self, batch: ScheduledBatch, budget: int) -> None:
        over_quota: list[Sequence] = []  # skipped this step, keep their queue order
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting.popleft()
            cached = self.kv.match_prefix(seq)
            num_new = seq.num_pending_tokens
            if num_new > budget and not self.chunked:
                self._unadmit(seq)
                self.waiting.appendleft(seq)
                break
            num_new = min(num_new, budget)
            status = self._grow(seq, num_new)
            if status is not AllocStatus.OK:
                self._unadmit(seq)
                if status is AllocStatus.OVER_QUOTA:
                    over_quota.append(seq)
                    continue
                self.waiting.appendleft(seq)
                break  # back-pressure: wait for blocks to free up
            if seq.metrics.preemptions == 0:
                seq.metrics.num_cached_tokens = cached
                self.kv.record_admission(seq, cached)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            batch.items.append((seq, num_new))
            budget -= num_new
        self.waiting.extendleft(reversed(over_quota))

    def _unadmit(self, seq: Sequence) -> None:
        """Give back the prefix hit of a sequence that cannot start now (the caller re-queues
        it)."""
        self.kv.free(seq)
        seq.num_computed_tokens = 0

    def apply_plan(
        self, items: list[tuple[Sequence, int]], preempt: list[Sequence]
    ) -> ScheduledBatch | None:
        """Carry out an externally decided step (a scheduling-IR plan): preempt ``preempt``
        (running sequences, recomputed later), then give every ``(seq, num_new)`` its blocks
        and mark it running. Returns None, changing nothing, when the KV blocks would not fit;
        raises RuntimeError when an allocation is refused midway (a tenant quota), leaving a
        consistent state (preempted sequences wait, allocated blocks stay with their owner).
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
            status = self._grow(seq, n)
            if status is not AllocStatus.OK:  # shared prefix blocks or a tenant quota
                raise RuntimeError(f"request {seq.request_id!r}: {status.value}")
            if seq.status is SeqStatus.WAITING:
                self.waiting.remove(seq)
                seq.status = SeqStatus.RUNNING
                self.running.append(seq)
            batch.items.append((seq, n))
        return batch
