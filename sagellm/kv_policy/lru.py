"""Least recently used."""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("lru")
class LRUPolicy(PolicyBase):
    """Evict the least recently inserted-or-hit evictable block.

    The classic policy (e.g. Mattson et al., "Evaluation techniques for storage hierarchies",
    IBM Systems Journal 1970, which introduced LRU stack distances). An OrderedDict keeps
    recency: first = least recent. O(1) per event.

    A victim search passes over unevictable blocks (pinned, referenced). Under a context with
    ``evictable_hints`` it sets them aside instead (``_parked``, with their recency stamp),
    so the next search does not pass over them again; the ``on_evictable`` hint returns a
    parked block to its place in recency order through a heap merged with the OrderedDict's
    front (O(log n)). Victims are the same as without parking: the evictable block of
    smallest stamp. Invariant: every tracked block is in exactly one of ``_order``,
    ``_parked``, ``_returned`` (the heap may also hold stale pairs, skipped by stamp).
    """

    name = "lru"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._order: OrderedDict[BlockId, None] = OrderedDict()
        self._stamp: dict[BlockId, int] = {}  # recency: larger = more recent
        self._clock = itertools.count()
        self._parked: set[BlockId] = set()
        self._returned: set[BlockId] = set()  # un-parked, ordered by the heap
        self._heap: list[tuple[int, BlockId]] = []

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._order[block_id] = None
        self._stamp[block_id] = next(self._clock)

    def _unlink(self, block_id: BlockId) -> None:
        if block_id in self._order:
            del self._order[block_id]
        elif block_id in self._parked:
            self._parked.remove(block_id)
        else:
            self._returned.remove(block_id)  # its heap pair goes stale

    def on_access(self, block_id: BlockId) -> None:
        if block_id in self._order:
            self._order.move_to_end(block_id)
        else:
            self._unlink(block_id)
            self._order[block_id] = None
        self._stamp[block_id] = next(self._clock)

    def on_remove(self, block_id: BlockId) -> None:
        self._unlink(block_id)
        del self._stamp[block_id]

    def on_evictable(self, block_id: BlockId) -> None:
        if block_id in self._parked:
            self._parked.remove(block_id)
            self._returned.add(block_id)
            heapq.heappush(self._heap, (self._stamp[block_id], block_id))

    def _unpark_all(self) -> None:
        for b in list(self._parked):
            self.on_evictable(b)

    def _oldest(self) -> BlockId | None:
        """The least recent block not parked (the front of the order or of the heap)."""
        heap, stamp = self._heap, self._stamp
        while heap and (heap[0][1] not in self._returned or stamp[heap[0][1]] != heap[0][0]):
            heapq.heappop(heap)  # stale: removed, accessed or re-parked since
        front = next(iter(self._order), None)
        if not heap:
            return front
        if front is None or heap[0][0] < stamp[front]:
            return heap[0][1]
        return front

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        order = self._order
        if num_blocks == 1 and ctx.is_evictable is None and order and not self._returned:
            b = order.popitem(last=False)[0]  # the replay's hot path
            del self._stamp[b]
            return EvictionDecision((b,), "lru tail")
        check_num_blocks(num_blocks)
        ok = ctx.is_evictable
        park = ctx.evictable_hints and ok is not None
        if not park and self._parked:
            self._unpark_all()  # another rule now: every block is a candidate again
        picked: list[BlockId] = []
        passed: list[BlockId] = []
        while len(picked) < num_blocks:
            b = self._oldest()
            if b is None:
                break
            self._unlink(b)
            if ok is None or ok(b):
                picked.append(b)
                del self._stamp[b]
            else:
                passed.append(b)
                self._parked.add(b)
        if not park:  # passed-over blocks keep their places for the next search
            for b in passed:
                self.on_evictable(b)
        return EvictionDecision(tuple(picked), "lru tail")

    def __len__(self) -> int:
        return len(self._stamp)
