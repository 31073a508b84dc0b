"""Offline cache simulator: replays block-id request streams through an ``EvictionPolicy``.

A stream is a sequence of requests; a request is the sequence of block ids its prompt touches,
in order (a Mooncake record's ``hash_ids``). Every block id is one block of the pool, so
capacity counts blocks, never bytes. Per block lookup the simulator does what the runtime does::

    hit  -> policy.on_access(b)
    miss -> policy.on_miss(b); if full: select_victims(ctx, 1) and free them; on_insert(b)

With ``pin_request_blocks`` the blocks of the request being served are pinned (reference count
> 0, not evictable) until it ends, like an engine holding a sequence's KV; a miss that finds
no evictable victim is served without caching its block. With ``leaves_first`` a block is
evictable only while no cached block names it as its parent (the previous block of a request
that contained it): a radix prefix index frees leaves first, since a block whose parent is gone
can never be reused. Without either option the simulator is a plain object cache, the
semantics libCacheSim uses (the differential tests rely on this).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sagellm.core.types import BlockId
from sagellm.kv_policy.cost_benefit import PrefillFlopModel
from sagellm.kv_policy.protocol import EvictionPolicy
from sagellm.kv_policy.types import PolicyContext, PoolStats


@dataclass(frozen=True)
class ReplayResult:
    """Counts of one replay. ``hit_ratio == num_hits / num_accesses``.

    ``prefix_hit_ratio`` counts only hits that an engine can reuse: the blocks of a request
    up to its first miss (a prefix cache cannot use a block whose predecessor is gone).
    A wrong eviction is a victim requested again within ``window_accesses`` block lookups.
    """

    policy: str
    capacity_blocks: int
    num_requests: int
    num_accesses: int
    num_hits: int
    num_prefix_hits: int
    num_evictions: int
    num_wrong_evictions: int
    num_bypassed: int  # misses not cached because every block was pinned
    window_accesses: int
    wall_s: float  # replay time, policy and bookkeeping included
    prefill_flops_total: float = 0.0  # prefill FLOPs of every lookup (with a flop model)
    prefill_flops_saved: float = 0.0  # of those, the prefix hits' FLOPs (reused, not recomputed)

    @property
    def hit_ratio(self) -> float:
        return self.num_hits / self.num_accesses if self.num_accesses else 0.0

    @property
    def prefix_hit_ratio(self) -> float:
        return self.num_prefix_hits / self.num_accesses if self.num_accesses else 0.0

    @property
    def flops_saved_ratio(self) -> float:
        """Share of prefill FLOPs that prefix hits save: the objective a cost-aware policy
        maximises (deep blocks cost more than shallow ones)."""
        t = self.prefill_flops_total
        return self.prefill_flops_saved / t if t else 0.0

    @property
    def wrong_eviction_rate(self) -> float:
        return self.num_wrong_evictions / self.num_evictions if self.num_evictions else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.num_requests / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in (
            "hit_ratio",
            "prefix_hit_ratio",
            "flops_saved_ratio",
            "wrong_eviction_rate",
            "requests_per_s",
        ):
            d[k] = getattr(self, k)
        return d


def _plain_loop(policy, requests, cap: int, window: int, block_tokens: int, ctx):
    """``simulate``'s loop without pinning, prefix tree, FLOPs or hooks (the common case)."""
    cached: set[BlockId] = set()
    evicted_at: dict[BlockId, int] = {}
    on_access, on_miss, on_insert = policy.on_access, policy.on_miss, policy.on_insert
    select = policy.select_victims
    hits = prefix_hits = evictions = wrong = 0
    i = 0
    for req in requests:
        in_prefix = True
        for pos, b in enumerate(req):
            i += 1
            if b in cached:
                hits += 1
                prefix_hits += in_prefix
                on_access(b)
                continue
            in_prefix = False
            e = evicted_at.pop(b, None)
            if e is not None and i - e <= window:
                wrong += 1
            on_miss(b)
            if len(cached) >= cap:
                for v in select(ctx, 1).victims:
                    cached.remove(v)
                    evicted_at[v] = i
                    evictions += 1
            on_insert(b, (pos + 1) * block_tokens)
            cached.add(b)
    return i, hits, prefix_hits, evictions, wrong


def simulate(
    policy: EvictionPolicy,
    requests: Sequence[Sequence[BlockId]],
    *,
    window_accesses: int | None = None,
    pin_request_blocks: bool = False,
    leaves_first: bool = False,
    block_tokens: int = 512,
    flop_model: PrefillFlopModel | None = None,
    on_evict: Callable[[BlockId, int], None] | None = None,
) -> ReplayResult:
    """Replay ``requests`` through ``policy`` at ``policy.capacity_blocks``.

    ``window_accesses`` (default: the capacity) is the wrong-eviction window in block lookups.
    ``block_tokens`` sets ``prefix_tokens = (position + 1) * block_tokens`` on insertion.
    ``flop_model`` adds the prefill-FLOP totals (saved by prefix hits, and overall).
    ``on_evict(block_id, lookup_index)`` is called for every victim (1-based lookup index).
    """
    cap = policy.capacity_blocks
    window = cap if window_accesses is None else window_accesses
    if window < 0:
        raise ValueError(f"window_accesses must be >= 0, got {window_accesses}")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    pinned: set[BlockId] = set()
    num_children: dict[BlockId, int] = {}  # cached blocks whose parent is the key
    parent_of: dict[BlockId, BlockId] = {}
    if leaves_first:
        is_evictable = lambda b: b not in pinned and not num_children.get(b)  # noqa: E731
    elif pin_request_blocks:
        is_evictable = lambda b: b not in pinned  # noqa: E731
    else:
        is_evictable = None
    ctx = PolicyContext(
        pool_stats=PoolStats(capacity_blocks=cap, num_used_blocks=cap),
        is_evictable=is_evictable,
    )
    if not (pin_request_blocks or leaves_first or flop_model or on_evict):
        t0 = time.perf_counter()
        i, hits, prefix_hits, evictions, wrong = _plain_loop(
            policy, requests, cap, window, block_tokens, ctx
        )
        return ReplayResult(
            policy.name, cap, len(requests), i, hits, prefix_hits, evictions, wrong, 0, window,
            time.perf_counter() - t0,
        )  # fmt: skip
    cached: set[BlockId] = set()
    evicted_at: dict[BlockId, int] = {}
    on_access, on_miss, on_insert = policy.on_access, policy.on_miss, policy.on_insert
    on_evictable = policy.on_evictable
    select = policy.select_victims
    hits = prefix_hits = evictions = wrong = bypassed = 0
    i = 0
    pos_flops: list[float] = []  # prefill FLOPs of the block at each position
    if flop_model is not None:
        max_pos = max((len(r) for r in requests), default=0)
        pos_flops = [
            flop_model.block_flops((p + 1) * block_tokens, block_tokens) for p in range(max_pos)
        ]
    flops_saved = flops_total = 0.0
    t0 = time.perf_counter()
    for req in requests:
        in_prefix = True
        parent = None
        for pos, b in enumerate(req):
            i += 1
            if b in cached:
                hits += 1
                if in_prefix:
                    prefix_hits += 1
                    if pos_flops:
                        flops_saved += pos_flops[pos]
                on_access(b)
            else:
                in_prefix = False
                e = evicted_at.pop(b, None)
                if e is not None and i - e <= window:
                    wrong += 1
                on_miss(b)
                if len(cached) >= cap:
                    victims = select(ctx, 1).victims
                    if not victims:
                        bypassed += 1
                        parent = b
                        continue
                    for v in victims:
                        cached.remove(v)
                        evicted_at[v] = i
                        if on_evict is not None:
                            on_evict(v, i)
                        if leaves_first and v in parent_of:
                            par = parent_of.pop(v)
                            num_children[par] -= 1
                            if not num_children[par] and par in cached and par not in pinned:
                                on_evictable(par)
                    evictions += len(victims)
                on_insert(b, (pos + 1) * block_tokens)
                cached.add(b)
                if leaves_first and parent is not None:
                    parent_of[b] = parent
                    num_children[parent] = num_children.get(parent, 0) + 1
            if pin_request_blocks:
                pinned.add(b)
            parent = b
        if pin_request_blocks:
            for b in pinned:
                if b in cached and not num_children.get(b):
                    on_evictable(b)
            pinned.clear()
    wall_s = time.perf_counter() - t0
    if pos_flops:
        flops_total = sum(sum(pos_flops[: len(r)]) for r in requests)
    return ReplayResult(
        policy=policy.name,
        capacity_blocks=cap,
        num_requests=len(requests),
        num_accesses=i,
        num_hits=hits,
        num_prefix_hits=prefix_hits,
        num_evictions=evictions,
        num_wrong_evictions=wrong,
        num_bypassed=bypassed,
        window_accesses=window,
        wall_s=wall_s,
        prefill_flops_total=flops_total,
        prefill_flops_saved=flops_saved,
    )
