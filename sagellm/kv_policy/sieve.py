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
        self._visited[block_id] = True

    def on_remove(self, block_id: BlockId) -> None:
        newer = self._newer.pop(block_id)
        older = self._older.pop(block_id)
        del self._visited[block_id]
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
        visited, newer = self._visited, self._newer
        b = self._hand if self._hand is not None else self._tail
        for _ in range(2 * len(visited) + 1):  # two sweeps clear every bit; more means all pinned
            if b is None:
                b = self._tail
            if visited[b]:
                visited[b] = False
            elif ok is None or ok(b):
                self._hand = newer[b]
                self.on_remove(b)
                return b
            b = newer[b]
        return None

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
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
