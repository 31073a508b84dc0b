"""ARC: adaptive replacement between a recency list and a frequency list, tuned by ghosts."""

from __future__ import annotations

from collections import OrderedDict

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.parking import ParkingQueue
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


def _pop_lru(lst: ParkingQueue, ok, park: bool) -> BlockId | None:
    """Remove and return the least recent evictable id of ``lst`` (None if there is none)."""
    got = lst.pop_oldest(ok, 1, park)
    return got[0] if got else None


@EVICTION_POLICIES.register("arc")
class ARCPolicy(PolicyBase):
    """Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST 2003
    (Fig. 4 of the paper). Cached blocks live in T1 (seen once) or T2 (seen twice or more);
    ghosts of evicted ones in B1 and B2. A hit in B1 grows the target size ``p`` of T1 by
    max(|B2| / |B1|, 1), a hit in B2 shrinks it by max(|B1| / |B2|, 1) (real-valued, as in the
    paper and libCacheSim); REPLACE evicts T1's LRU into B1 if |T1| > p (or == p on a B2 hit, or
    T2 is empty), else T2's LRU into B2.
    Invariants: |T1| + |B1| <= C, |T1| + |T2| + |B1| + |B2| <= 2C.

    Ghost-hit adaptation happens in ``on_miss`` (it must precede the victim choice). T1 and T2
    are :class:`ParkingQueue` s: under ``evictable_hints`` a search sets unevictable blocks
    aside instead of passing over them each time (they still count in |T1| and |T2|).
    """

    name = "arc"

    def __init__(self, capacity_blocks: int) -> None:
        super().__init__(capacity_blocks)
        self._t1 = ParkingQueue()  # oldest first
        self._t2 = ParkingQueue()
        self._b1: OrderedDict[BlockId, None] = OrderedDict()
        self._b2: OrderedDict[BlockId, None] = OrderedDict()
        self.p_blocks = 0.0  # target size of T1 (real-valued)
        self._hit_b1 = False
        self._hit_b2 = False
        self._park = False  # the current search's evictable_hints

    def on_miss(self, block_id: BlockId) -> None:
        b1, b2 = self._b1, self._b2
        self._hit_b1 = self._hit_b2 = False
        if block_id in b1:
            self.p_blocks = min(self.p_blocks + max(len(b2) / len(b1), 1.0), self.capacity_blocks)
            del b1[block_id]
            self._hit_b1 = True
        elif block_id in b2:
            self.p_blocks = max(self.p_blocks - max(len(b1) / len(b2), 1.0), 0.0)
            del b2[block_id]
            self._hit_b2 = True

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        if self._hit_b1 or self._hit_b2:
            self._t2.push(block_id)
        else:
            self._t1.push(block_id)
        self._hit_b1 = self._hit_b2 = False
        c = self.capacity_blocks
        # Only external removals (on_remove) can leave room here; keep the ghost bound anyway.
        while len(self._t1) + len(self._b1) > c and self._b1:
            self._b1.popitem(last=False)
        while len(self._t1) + len(self._t2) + len(self._b1) + len(self._b2) > 2 * c and self._b2:
            self._b2.popitem(last=False)

    def on_access(self, block_id: BlockId) -> None:
        t1 = self._t1
        if block_id in t1:
            t1.remove(block_id)
            self._t2.push(block_id)
        else:
            self._t2.touch(block_id)

    def on_remove(self, block_id: BlockId) -> None:
        if block_id in self._t1:
            self._t1.remove(block_id)
        else:
            self._t2.remove(block_id)

    def on_evictable(self, block_id: BlockId) -> None:
        (self._t1 if block_id in self._t1 else self._t2).on_evictable(block_id)

    def _replace(self, ok) -> BlockId | None:
        t1 = self._t1
        n1 = len(t1)
        p = self.p_blocks
        if (n1 > 0 and (n1 > p or (n1 == p and self._hit_b2))) or not self._t2:
            order = ((t1, self._b1), (self._t2, self._b2))
        else:
            order = ((self._t2, self._b2), (t1, self._b1))
        for data, ghost in order:
            v = _pop_lru(data, ok, self._park)
            if v is not None:
                ghost[v] = None
                return v
        return None

    def _evict_one(self, ok) -> BlockId | None:
        if self._hit_b1 or self._hit_b2:
            return self._replace(ok)
        c = self.capacity_blocks
        t1, b1 = self._t1, self._b1
        if len(t1) + len(b1) >= c:
            if len(t1) < c:
                b1.popitem(last=False)
                return self._replace(ok)
            return _pop_lru(t1, ok, self._park)  # T1 fills the cache: evict without a ghost
        if len(t1) + len(self._t2) + len(b1) + len(self._b2) >= 2 * c and self._b2:
            self._b2.popitem(last=False)
        return self._replace(ok)

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        self._park = ctx.evictable_hints and ctx.is_evictable is not None
        victims: list[BlockId] = []
        while len(victims) < num_blocks and (self._t1 or self._t2):
            v = self._evict_one(ctx.is_evictable)
            if v is None:
                break
            victims.append(v)
            if ctx.on_victim is not None:
                ctx.on_victim(v)
        return EvictionDecision(tuple(victims), "arc replace")

    def __len__(self) -> int:
        return len(self._t1) + len(self._t2)
