"""Least recently used."""

from __future__ import annotations

from collections import OrderedDict

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("lru")
class LRUPolicy(PolicyBase):
    """Evict the least recently inserted-or-hit evictable block.

    The classic policy (e.g. Mattson et al., "Evaluation techniques for storage hierarchies",
    IBM Systems Journal 1970, which introduced LRU stack distances). An OrderedDict keeps
    recency: first = least recent. O(1) per event; a victim search skips pinned blocks.
    """

    name = "lru"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._order: OrderedDict[BlockId, None] = OrderedDict()

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._order[block_id] = None

    def on_access(self, block_id: BlockId) -> None:
        self._order.move_to_end(block_id)

    def on_remove(self, block_id: BlockId) -> None:
        del self._order[block_id]

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        order = self._order
        if num_blocks == 1 and ctx.is_evictable is None and order:  # the replay's hot path
            return EvictionDecision((order.popitem(last=False)[0],), "lru tail")
        check_num_blocks(num_blocks)
        ok = ctx.is_evictable
        if ok is None:
            n = min(num_blocks, len(order))
            victims = tuple(order.popitem(last=False)[0] for _ in range(n))
        else:
            picked = []
            for b in order:
                if len(picked) == num_blocks:
                    break
                if ok(b):
                    picked.append(b)
            for b in picked:
                del order[b]
            victims = tuple(picked)
        return EvictionDecision(victims, "lru tail")

    def __len__(self) -> int:
        return len(self._order)
