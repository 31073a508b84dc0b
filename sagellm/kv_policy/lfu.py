"""Least frequently used, ties broken first-in-first-out within a frequency."""

from __future__ import annotations

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
    count first goes first (the same rule as libCacheSim's LFU). Invariant: ``_min_freq`` is the
    smallest non-empty bucket whenever the policy tracks a block.
    """

    name = "lfu"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._freq: dict[BlockId, int] = {}
        self._buckets: dict[int, OrderedDict[BlockId, None]] = {}
        self._min_freq = 1

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._freq[block_id] = 1
        bucket = self._buckets.get(1)
        if bucket is None:
            bucket = self._buckets[1] = OrderedDict()
        bucket[block_id] = None
        self._min_freq = 1

    def on_access(self, block_id: BlockId) -> None:
        f = self._freq[block_id]
        buckets = self._buckets
        old = buckets[f]
        del old[block_id]
        if not old:
            del buckets[f]
            if self._min_freq == f:
                self._min_freq = f + 1
        self._freq[block_id] = f + 1
        new = buckets.get(f + 1)
        if new is None:
            new = buckets[f + 1] = OrderedDict()
        new[block_id] = None

    def on_remove(self, block_id: BlockId) -> None:
        f = self._freq.pop(block_id)
        bucket = self._buckets[f]
        del bucket[block_id]
        if not bucket:
            del self._buckets[f]
            if self._min_freq == f and self._buckets:
                self._min_freq = min(self._buckets)

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        ok = ctx.is_evictable
        victims: list[BlockId] = []
        if ok is None:
            while len(victims) < num_blocks and self._freq:
                b = next(iter(self._buckets[self._min_freq]))
                self.on_remove(b)
                victims.append(b)
        else:
            for f in sorted(self._buckets):
                for b in self._buckets[f]:
                    if len(victims) == num_blocks:
                        break
                    if ok(b):
                        victims.append(b)
            for b in victims:
                self.on_remove(b)
        return EvictionDecision(tuple(victims), "lfu min count")

    def __len__(self) -> int:
        return len(self._freq)
