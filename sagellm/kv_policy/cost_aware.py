"""Cost-aware eviction: keep the blocks whose loss would cost the most recompute per byte."""

from __future__ import annotations

import heapq

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import EVICTION_POLICIES, PolicyBase, check_num_blocks
from sagellm.kv_policy.cost_benefit import PrefillFlopModel
from sagellm.kv_policy.lifetime import EwmaLifetimePredictor
from sagellm.kv_policy.types import EvictionDecision, PolicyContext


@EVICTION_POLICIES.register("cost_aware")
class CostAwarePolicy(PolicyBase):
    """GreedyDual eviction whose value is ``recompute_s * p_reuse / size_bytes``.

    - ``recompute_s``: prefill FLOPs of the block at its position (``PrefillFlopModel``; the
      prefix it completes has ``prefix_tokens`` tokens) over the caller's measured
      ``flops_per_s``. Deep blocks cost more: attention grows with the prefix.
    - ``p_reuse``: probability of a reuse within ``horizon`` policy events (default: the
      capacity), from ``EwmaLifetimePredictor`` (the block's own reuse gaps, else its depth
      group's), refreshed on every insert and hit.
    - Priority ``H = L + value``; the victim is the evictable block with the smallest ``H``
      and ``L`` becomes its ``H`` (the inflation clock ages blocks that are not hit), as in
      Cao and Irani, "Cost-Aware WWW Proxy Caching Algorithms", USITS 1997, and Cherkasova's
      GreedyDual-Size-Frequency (HP Labs TR 1998), with the predicted reuse probability in
      place of the hit count. A lazy binary heap: O(log n) per event. Entries found not
      evictable leave the heap until ``on_evictable`` re-admits them (the runtime reports a
      block whose reference count fell to 0 or that became a leaf); a runtime that never
      reports it costs one full search when the heap runs dry.

    With equal block sizes the ranking does not depend on ``flops_per_s`` or
    ``block_size_bytes``; they make the values seconds per byte.
    """

    name = "cost_aware"

    def __init__(
        self,
        capacity_blocks: int,
        flop_model: PrefillFlopModel | None = None,
        flops_per_s: float = 1.0,
        block_size_bytes: int = 1,
        block_tokens: int = 512,
        horizon: float | None = None,
        predictor: EwmaLifetimePredictor | None = None,
    ) -> None:
        super().__init__(capacity_blocks)
        if flops_per_s <= 0:
            raise ValueError(f"flops_per_s must be > 0, got {flops_per_s}")
        if block_size_bytes < 1 or block_tokens < 1:
            raise ValueError(
                "block_size_bytes and block_tokens must be >= 1, got "
                f"{block_size_bytes}, {block_tokens}"
            )
        self.flop_model = flop_model or PrefillFlopModel.smollm2_135m()
        self.flops_per_s = flops_per_s
        self.block_size_bytes = block_size_bytes
        self.block_tokens = block_tokens
        self.horizon = float(capacity_blocks) if horizon is None else horizon
        self.predictor = predictor or EwmaLifetimePredictor()
        self.inflation = 0.0  # L
        self._clock = 0
        self._heap: list[tuple[float, int, BlockId]] = []
        self._entry: dict[BlockId, tuple[float, int]] = {}  # live (H, seq) per tracked block
        self._cost_s: dict[BlockId, float] = {}
        self._group: dict[BlockId, int] = {}

    def _touch(self, block_id: BlockId) -> None:
        self._clock += 1
        g = self._group[block_id]
        pred = self.predictor
        pred.observe(block_id, g, float(self._clock))
        value = self._cost_s[block_id] * pred.p_reuse(block_id, g, self.horizon)
        h = self.inflation + value / self.block_size_bytes
        self._entry[block_id] = (h, self._clock)
        heapq.heappush(self._heap, (h, self._clock, block_id))
        if len(self._heap) > 4 * len(self._entry) + 64:
            self._heap = [(h, s, b) for b, (h, s) in self._entry.items()]
            heapq.heapify(self._heap)

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        tokens = prefix_tokens if prefix_tokens is not None else self.block_tokens
        self._cost_s[block_id] = (
            self.flop_model.block_flops(tokens, self.block_tokens) / self.flops_per_s
        )
        self._group[block_id] = max(tokens // self.block_tokens, 1).bit_length()
        self._touch(block_id)

    def on_access(self, block_id: BlockId) -> None:
        self._touch(block_id)

    def on_remove(self, block_id: BlockId) -> None:
        del self._entry[block_id], self._cost_s[block_id], self._group[block_id]

    def on_evictable(self, block_id: BlockId) -> None:
        live = self._entry.get(block_id)
        if live is not None:  # re-admit it to the heap (a duplicate entry is harmless)
            heapq.heappush(self._heap, (live[0], live[1], block_id))

    def _pop_one(self, ok) -> BlockId | None:
        heap, entry = self._heap, self._entry
        while heap:
            h, seq, b = heapq.heappop(heap)
            if entry.get(b) != (h, seq):
                continue  # stale
            if ok is not None and not ok(b):
                continue  # dropped until on_evictable re-admits it
            self.inflation = h
            self.on_remove(b)
            return b
        if not entry:
            return None
        # The heap ran dry but blocks skipped earlier (not evictable then, and the runtime did
        # not report on_evictable) remain: rebuild from every entry and search once.
        self._heap = sorted((h, s, b) for b, (h, s) in entry.items())
        for h, _s, b in self._heap:
            if ok is None or ok(b):
                self.inflation = h
                self.on_remove(b)
                return b
        return None

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        check_num_blocks(num_blocks)
        victims: list[BlockId] = []
        while len(victims) < num_blocks and self._entry:
            v = self._pop_one(ctx.is_evictable)
            if v is None:
                break
            victims.append(v)
            if ctx.on_victim is not None:
                ctx.on_victim(v)
        return EvictionDecision(tuple(victims), "lowest greedy-dual recompute-s x p_reuse / byte")

    def __len__(self) -> int:
        return len(self._entry)
