"""Least frequently used, ties broken first-in-first-out within a frequency."""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("lfu")
class LFUPolicy(PolicyBase):
    """Evict the evictable block with the fewest hits since its insertion.

    In-cache LFU with the O(1) frequency-bucket layout of Shah, Mitra and Matani, "An O(1)
    algorithm for implementing the LFU cache eviction scheme" (2010). Counts start at 1 on
    insertion and are forgotten on eviction. Ties: within a count, the block that reached that
    count first goes first (the same rule as libCacheSim's LFU), so the eviction order is by
    ``(count, stamp of reaching it)``. Invariant: ``_min_freq`` is the smallest non-empty
    bucket whenever a bucket holds a block.

    Under ``PolicyContext.evictable_hints`` a block found unevictable is set aside
    (``_parked``) until ``on_evictable``, which returns it through a heap keyed like the
    buckets (merged with the smallest bucket's front), as in :class:`LRUPolicy`: the victims
    are those of a search that passes over it every time.
    """

    name = "lfu"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._freq: dict[BlockId, int] = {}
        self._stamp: dict[BlockId, int] = {}
        self._clock = itertools.count()
        self._buckets: dict[int, OrderedDict[BlockId, None]] = {}
        self._min_freq = 1
        self._parked: set[BlockId] = set()
        self._returned: set[BlockId] = set()  # un-parked, ordered by the heap
        self._heap: list[tuple[int, int, BlockId]] = []

    def _bucket_add(self, block_id: BlockId, f: int) -> None:
        bucket = self._buckets.get(f)
        if bucket is None:
            bucket = self._buckets[f] = OrderedDict()
            if len(self._buckets) == 1 or f < self._min_freq:
                self._min_freq = f
        bucket[block_id] = None
        self._freq[block_id] = f
        self._stamp[block_id] = next(self._clock)

    def _unlink(self, block_id: BlockId, next_freq: int | None = None) -> None:
        """Take ``block_id`` out of wherever it waits; ``next_freq``: the bucket it joins next
        (a non-empty bucket to come, so the smallest one is known without a search)."""
        if block_id in self._parked:
            self._parked.remove(block_id)
        elif block_id in self._returned:
            self._returned.remove(block_id)  # its heap entry goes stale
        else:
            f = self._freq[block_id]
            bucket = self._buckets[f]
            del bucket[block_id]
            if not bucket:
                del self._buckets[f]
                if self._min_freq == f and next_freq is not None:
                    self._min_freq = next_freq
                elif self._min_freq == f and self._buckets:
                    self._min_freq = min(self._buckets)

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._bucket_add(block_id, 1)

    def on_access(self, block_id: BlockId) -> None:
        f = self._freq[block_id]
        self._unlink(block_id, f + 1)
        self._bucket_add(block_id, f + 1)

    def on_remove(self, block_id: BlockId) -> None:
        self._unlink(block_id)
        del self._freq[block_id], self._stamp[block_id]

    def on_evictable(self, block_id: BlockId) -> None:
        if block_id in self._parked:
            self._parked.remove(block_id)
            self._returned.add(block_id)
            key = (self._freq[block_id], self._stamp[block_id], block_id)
            heapq.heappush(self._heap, key)

    def _first(self) -> BlockId | None:
        """The first block in eviction order that is not parked."""
        heap, freq, stamp = self._heap, self._freq, self._stamp
        while heap and (
            heap[0][2] not in self._returned or (freq[heap[0][2]], stamp[heap[0][2]]) != heap[0][:2]
        ):
            heapq.heappop(heap)  # stale: removed, accessed or re-parked since
        front = next(iter(self._buckets[self._min_freq])) if self._buckets else None
        if not heap:
            return front
        if front is None or heap[0][:2] < (freq[front], stamp[front]):
            return heap[0][2]
        return front

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        ok = ctx.is_evictable
        park = ctx.evictable_hints and ok is not None
        if not park:
            for b in list(self._parked):  # another rule now: every block is a candidate
                self.on_evictable(b)
        victims: list[BlockId] = []
        passed: list[BlockId] = []
        while len(victims) < num_blocks:
            b = self._first()
            if b is None:
                break
            self._unlink(b)
            if ok is None or ok(b):
                victims.append(b)
                del self._freq[b], self._stamp[b]
                if ctx.on_victim is not None:
                    ctx.on_victim(b)
            else:
                passed.append(b)
                self._parked.add(b)
        if not park:  # passed-over blocks keep their places for the next search
            for b in passed:
                self.on_evictable(b)
        return EvictionDecision(tuple(victims), "lfu min count")

    def __len__(self) -> int:
        return len(self._freq)
