"""SIEVE: a FIFO queue with one visited bit per block and a moving hand."""

from __future__ import annotations

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("sieve")
class SievePolicy(PolicyBase):
    """Zhang, Yang, Yue, Vigfusson, Rashmi, "SIEVE is Simpler than LRU: an Efficient
    Turn-Key Eviction Algorithm for Web Caches", NSDI 2024.

    New blocks enter at the head (newest end) unvisited; a hit sets the visited bit. To evict,
    the hand walks from where it stopped (the tail, oldest, at first) toward the head, clearing
    visited bits, and evicts the first unvisited evictable block; it wraps to the tail. Unlike
    CLOCK, survivors are not moved, so the queue stays in insertion order. Pinned blocks are
    passed over with their bit unchanged.

    Layout: a doubly linked list in two dicts (``_newer``/``_older``; ``None`` at the ends).

    Under ``PolicyContext.evictable_hints`` blocks the hand found unevictable are remembered
    (``_stuck``, cleared by ``on_evictable``, an access or removal). When every block is stuck
    and no visited bit is set the search is skipped: the scan would change nothing (O(1)
    instead of two sweeps). Otherwise the hand still passes over pinned blocks.
    """

    name = "sieve"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._visited: dict[BlockId, bool] = {}
        self._newer: dict[BlockId, BlockId | None] = {}
        self._older: dict[BlockId, BlockId | None] = {}
        self._head: BlockId | None = None  # newest
        self._tail: BlockId | None = None  # oldest
        self._hand: BlockId | None = None  # next block to examine; None = start at the tail
        self._num_visited = 0  # blocks whose visited bit is set
        self._stuck: set[BlockId] = set()  # found unevictable, no hint since
        self._park = False  # the current search's evictable_hints

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        self._visited[block_id] = False
        self._newer[block_id] = None
        self._older[block_id] = self._head
        if self._head is not None:
            self._newer[self._head] = block_id
        else:
            self._tail = block_id
        self._head = block_id

    def on_access(self, block_id: BlockId) -> None:
        if not self._visited[block_id]:
            self._visited[block_id] = True
            self._num_visited += 1
        self._stuck.discard(block_id)

    def on_evictable(self, block_id: BlockId) -> None:
        self._stuck.discard(block_id)

    def on_remove(self, block_id: BlockId) -> None:
        newer = self._newer.pop(block_id)
        older = self._older.pop(block_id)
        self._num_visited -= self._visited.pop(block_id)
        self._stuck.discard(block_id)
        if self._hand == block_id:
            self._hand = newer
        if newer is None:
            self._head = older
        else:
            self._older[newer] = older
        if older is None:
            self._tail = newer
        else:
            self._newer[older] = newer

    def _evict_one(self, ok) -> BlockId | None:
        visited, newer, stuck = self._visited, self._newer, self._stuck
        if self._park and len(stuck) == len(visited) and not self._num_visited:
            return None  # all pinned, no bit to clear: the sweeps below would change nothing
        b = self._hand if self._hand is not None else self._tail
        for _ in range(2 * len(visited) + 1):  # two sweeps clear every bit; more means all pinned
            if b is None:
                b = self._tail
            if visited[b]:
                visited[b] = False
                self._num_visited -= 1
            elif ok is None or ok(b):
                self._hand = newer[b]
                self.on_remove(b)
                return b
            elif self._park:
                stuck.add(b)
            b = newer[b]
        return None

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        self._park = ctx.evictable_hints and ctx.is_evictable is not None
        if not self._park:  # another rule now: what was stuck may be evictable
            self._stuck.clear()
        victims: list[BlockId] = []
        while len(victims) < num_blocks and self._visited:
            v = self._evict_one(ctx.is_evictable)
            if v is None:
                break
            victims.append(v)
            if ctx.on_victim is not None:
                ctx.on_victim(v)
        return EvictionDecision(tuple(victims), "sieve hand")

    def __len__(self) -> int:
        return len(self._visited)
