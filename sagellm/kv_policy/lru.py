"""Least recently used."""

from __future__ import annotations

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.parking import ParkingQueue
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("lru")
class LRUPolicy(PolicyBase):
    """Evict the least recently inserted-or-hit evictable block.

    The classic policy (e.g. Mattson et al., "Evaluation techniques for storage hierarchies",
    IBM Systems Journal 1970, which introduced LRU stack distances). A :class:`ParkingQueue`
    keeps recency: O(1) per event; a victim search passes over unevictable blocks, or under
    ``evictable_hints`` sets them aside until they turn evictable (same victims, O(log n)).
    """

    name = "lru"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._queue = ParkingQueue()

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._queue.push(block_id)

    def on_access(self, block_id: BlockId) -> None:
        self._queue.touch(block_id)

    def on_remove(self, block_id: BlockId) -> None:
        self._queue.remove(block_id)

    def on_evictable(self, block_id: BlockId) -> None:
        self._queue.on_evictable(block_id)

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        ok = ctx.is_evictable
        park = ctx.evictable_hints and ok is not None
        victims = self._queue.pop_oldest(ok, num_blocks, park, ctx.on_victim)
        return EvictionDecision(tuple(victims), "lru tail")

    def __len__(self) -> int:
        return len(self._queue)
