"""S3-FIFO: a small probationary FIFO, a main FIFO with a 2-bit clock, and a ghost FIFO."""

from __future__ import annotations

from collections import OrderedDict

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("s3fifo")
class S3FIFOPolicy(PolicyBase):
    """Yang, Zhang, Qiu, Yue, Rashmi, "FIFO queues are all you need for cache eviction",
    SOSP 2023, with the refinements of libCacheSim's ``S3FIFO.c`` so the two agree exactly:

    - queues: small ``S`` = floor(0.1 C) blocks, main ``M`` = C - S, ghost ``G`` =
      floor(0.9 C) ids (no data). Each cached block has a hit counter ``freq`` (0 on entry).
    - insert: into M if the id was in G (then removed from G), else into S; before the first
      eviction, a full S sends new blocks to M.
    - evict: from M while M holds more than its share or S is empty, else from S. From S: the
      oldest block moves to M (freq reset to 0) if ``freq >= move_to_main_threshold``, else it
      is evicted and its id enters G. From M: the oldest block with freq >= 1 is reinserted with
      ``min(freq, 3) - 1``, the first with freq 0 is evicted.
    - a pinned block at a queue head is rotated to its queue's tail, counter unchanged.

    Invariant: ``len(S) + len(M) == len(self)``; G and S/M are disjoint.

    Under ``PolicyContext.evictable_hints`` the blocks a search found unevictable are
    remembered per queue (``_stuck_*``, cleared by ``on_evictable``, an access or removal):
    when a whole queue is stuck its search is skipped, with the order change the scan would
    make (none for S: a full rotation; one position for M: 4 |M| + 1 rotations), so victims
    are unchanged while an all-pinned queue costs O(1) instead of O(|queue|) per victim.
    A partly pinned queue is still scanned as above.
    """

    name = "s3fifo"

    def __init__(
        self,
        capacity_blocks: int,
        small_ratio: float = 0.1,
        ghost_ratio: float = 0.9,
        move_to_main_threshold: int = 2,
    ) -> None:
        super().__init__(capacity_blocks)
        if not 0.0 <= small_ratio < 1.0:
            raise ValueError(f"small_ratio must be in [0, 1), got {small_ratio!r}")
        if ghost_ratio < 0.0:
            raise ValueError(f"ghost_ratio must be >= 0, got {ghost_ratio!r}")
        if move_to_main_threshold < 1:
            raise ValueError(f"move_to_main_threshold must be >= 1, got {move_to_main_threshold}")
        self.small_capacity_blocks = int(capacity_blocks * small_ratio)
        self.main_capacity_blocks = capacity_blocks - self.small_capacity_blocks
        self.ghost_capacity_blocks = int(capacity_blocks * ghost_ratio)
        self.move_to_main_threshold = move_to_main_threshold
        self._small: OrderedDict[BlockId, None] = OrderedDict()
        self._main: OrderedDict[BlockId, None] = OrderedDict()
        self._ghost: OrderedDict[BlockId, None] = OrderedDict()
        self._freq: dict[BlockId, int] = {}
        self._ghost_hit = False
        self._has_evicted = False
        self._stuck_small: set[BlockId] = set()  # found unevictable, no hint since
        self._stuck_main: set[BlockId] = set()
        self._park = False  # the current search's evictable_hints

    def on_miss(self, block_id: BlockId) -> None:
        ghost = self._ghost
        if block_id in ghost:
            del ghost[block_id]
            self._ghost_hit = True
        else:
            self._ghost_hit = False

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        if self._ghost_hit or (
            not self._has_evicted and len(self._small) >= self.small_capacity_blocks
        ):
            self._main[block_id] = None
        else:
            self._small[block_id] = None
        self._ghost_hit = False
        self._freq[block_id] = 0

    def on_access(self, block_id: BlockId) -> None:
        self._freq[block_id] += 1
        if self._stuck_small or self._stuck_main:
            self.on_evictable(block_id)

    def on_evictable(self, block_id: BlockId) -> None:
        self._stuck_small.discard(block_id)
        self._stuck_main.discard(block_id)

    def on_remove(self, block_id: BlockId) -> None:
        self.on_evictable(block_id)
        del self._freq[block_id]
        if block_id in self._small:
            del self._small[block_id]
        else:
            del self._main[block_id]

    def _to_ghost(self, block_id: BlockId) -> None:
        if self.ghost_capacity_blocks == 0 or block_id in self._ghost:
            return
        if len(self._ghost) >= self.ghost_capacity_blocks:
            self._ghost.popitem(last=False)
        self._ghost[block_id] = None

    def _evict_small(self, ok) -> BlockId | None:
        small, main, freq = self._small, self._main, self._freq
        if self._park and len(self._stuck_small) == len(small):
            return None  # all pinned: the scan would rotate S once round, leaving it as is
        for _ in range(len(small)):
            b, _v = small.popitem(last=False)
            if ok is not None and not ok(b):
                small[b] = None
                if self._park:
                    self._stuck_small.add(b)
            elif freq[b] >= self.move_to_main_threshold:
                main[b] = None
                freq[b] = 0
            else:
                del freq[b]
                self._to_ghost(b)
                return b
        return None

    def _evict_main(self, ok) -> BlockId | None:
        main, freq = self._main, self._freq
        if main and self._park and len(self._stuck_main) == len(main):
            main.move_to_end(next(iter(main)))  # all pinned: 4 |M| + 1 rotations = 1
            return None
        for _ in range(4 * len(main) + 1):  # three sweeps zero every counter
            if not main:
                return None
            b, _v = main.popitem(last=False)
            f = freq[b]
            if ok is not None and not ok(b):
                main[b] = None
                if self._park:
                    self._stuck_main.add(b)
            elif f >= 1:
                main[b] = None
                freq[b] = min(f, 3) - 1
            else:
                del freq[b]
                return b
        return None

    def _evict_one(self, ok) -> BlockId | None:
        self._has_evicted = True
        for _ in range(2):  # S may drain into M without a victim; then M must yield one
            if len(self._main) > self.main_capacity_blocks or not self._small:
                order = (self._evict_main, self._evict_small)
            else:
                order = (self._evict_small, self._evict_main)
            for evict in order:  # the second queue only when the first had nothing evictable
                v = evict(ok)
                if v is not None:
                    return v
        return None

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        self._park = ctx.evictable_hints and ctx.is_evictable is not None
        if not self._park:  # another rule now: what was stuck may be evictable
            self._stuck_small.clear()
            self._stuck_main.clear()
        victims: list[BlockId] = []
        while len(victims) < num_blocks and self._freq:
            v = self._evict_one(ctx.is_evictable)
            if v is None:
                break
            victims.append(v)
            if ctx.on_victim is not None:
                ctx.on_victim(v)
        return EvictionDecision(tuple(victims), "s3fifo")

    def __len__(self) -> int:
        return len(self._freq)
