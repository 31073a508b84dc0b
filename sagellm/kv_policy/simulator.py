"""Offline cache simulator: replays block-id request streams through an ``EvictionPolicy``.

A stream is a sequence of requests; a request is the sequence of block ids its prompt touches,
in order (a Mooncake record's ``hash_ids``). Every block id is one block of the pool, so
capacity counts blocks, never bytes. Per block lookup the simulator does what the runtime does::

    hit  -> policy.on_access(b)
    miss -> policy.on_miss(b); if full: select_victims(ctx, 1) and free them; on_insert(b)

With ``pin_request_blocks`` the blocks of the request being served are pinned (reference count
> 0, not evictable) until it ends, like an engine holding a sequence's KV; a miss that finds
no evictable victim is served without caching its block. Without pinning the simulator is a
plain object cache, the semantics libCacheSim uses (the differential tests rely on this).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sagellm.core.types import BlockId
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

    @property
    def hit_ratio(self) -> float:
        return self.num_hits / self.num_accesses if self.num_accesses else 0.0

    @property
    def prefix_hit_ratio(self) -> float:
        return self.num_prefix_hits / self.num_accesses if self.num_accesses else 0.0

    @property
    def wrong_eviction_rate(self) -> float:
        return self.num_wrong_evictions / self.num_evictions if self.num_evictions else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.num_requests / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("hit_ratio", "prefix_hit_ratio", "wrong_eviction_rate", "requests_per_s"):
            d[k] = getattr(self, k)
        return d


def replay(
    policy: EvictionPolicy,
    requests: Sequence[Sequence[BlockId]],
    *,
    window_accesses: int | None = None,
    pin_request_blocks: bool = False,
    block_tokens: int = 512,
) -> ReplayResult:
    """Replay ``requests`` through ``policy`` at ``policy.capacity_blocks``.

    ``window_accesses`` (default: the capacity) is the wrong-eviction window in block lookups.
    ``block_tokens`` sets ``prefix_tokens = (position + 1) * block_tokens`` on insertion.
    """
    cap = policy.capacity_blocks
    window = cap if window_accesses is None else window_accesses
    if window < 0:
        raise ValueError(f"window_accesses must be >= 0, got {window_accesses}")
    if block_tokens < 1:
        raise ValueError(f"block_tokens must be >= 1, got {block_tokens}")
    pinned: set[BlockId] = set()
    ctx = PolicyContext(
        pool_stats=PoolStats(capacity_blocks=cap, num_used_blocks=cap),
        is_evictable=(lambda b: b not in pinned) if pin_request_blocks else None,
    )
    cached: set[BlockId] = set()
    evicted_at: dict[BlockId, int] = {}
    on_access, on_miss, on_insert = policy.on_access, policy.on_miss, policy.on_insert
    select = policy.select_victims
    hits = prefix_hits = evictions = wrong = bypassed = 0
    i = 0
    t0 = time.perf_counter()
    for req in requests:
        in_prefix = True
        for pos, b in enumerate(req):
            i += 1
            if b in cached:
                hits += 1
                if in_prefix:
                    prefix_hits += 1
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
                        continue
                    for v in victims:
                        cached.remove(v)
                        evicted_at[v] = i
                    evictions += len(victims)
                on_insert(b, (pos + 1) * block_tokens)
                cached.add(b)
            if pin_request_blocks:
                pinned.add(b)
        if pin_request_blocks:
            pinned.clear()
    wall_s = time.perf_counter() - t0
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
    )
