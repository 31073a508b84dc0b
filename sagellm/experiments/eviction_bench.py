"""Latency of choosing and freeing one eviction victim in the native engine's KV manager, as
the cached blocks grow (1e3 -> 1e6), for any ``kv_policy``.

The device pool holds exactly ``num_blocks`` blocks (a tiny per-block tensor: bookkeeping is
what is timed). It is filled with chains of ``chain_blocks`` blocks (one sequence each:
allocate, compute, index, finish), so every block is cached and the pool is full;
``referenced_fraction`` of the chains (the oldest) stay held by running sequences, so a victim
search has to pass over them. Each timed step allocates one block for a new sequence: the
manager asks the policy for a victim, removes it from the index and frees it.

Run: ``python -m sagellm.experiments.eviction_bench --sizes 1000 100000 1000000``
"""

from __future__ import annotations

import argparse
import time

import torch

from sagellm.benchmarks.metrics import percentile
from sagellm.core.types import Request, RequestMetrics, SamplingParams
from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.engines.native.sequence import Sequence


def sequence(rid: str, tokens: list[int]) -> Sequence:
    req = Request(rid, tokens, SamplingParams(max_tokens=1))
    return Sequence(req, tokens, len(tokens), RequestMetrics(rid, 0.0, len(tokens)), None)


def fill(m: NativeKVManager, num_blocks: int, chain_blocks: int, num_held_chains: int):
    """Cache ``num_blocks`` blocks in chains; the first ``num_held_chains`` stay referenced.
    Returns the held sequences."""
    bs = m.block_size
    held = []
    for c in range(-(-num_blocks // chain_blocks)):
        n = min(chain_blocks, num_blocks - c * chain_blocks)
        s = sequence(f"fill-{c}", [c, *range(1, n * bs)])
        if m.allocate(s, n) is not AllocStatus.OK:
            raise RuntimeError(f"fill: no room for chain {c}")
        s.num_computed_tokens = n * bs
        m.commit(s)
        if c < num_held_chains:
            held.append(s)
        else:
            m.free(s)
    return held


def eviction_latency(
    num_blocks: int,
    num_evictions: int = 2000,
    policy: str = "lru",
    chain_blocks: int = 64,
    referenced_fraction: float = 0.0,
    block_size_tokens: int = 16,
) -> dict[str, float]:
    """Latencies in microseconds of ``num_evictions`` one-block allocations that each evict one
    cached block (p50, p99, max)."""
    if not 0.0 <= referenced_fraction < 1.0:
        raise ValueError(f"referenced_fraction must be in [0, 1), got {referenced_fraction}")
    kv = torch.zeros(1, 2, num_blocks, 1, 1, 1)
    m = NativeKVManager(kv, block_size_tokens, enable_prefix_caching=True, eviction_policy=policy)
    num_chains = -(-num_blocks // chain_blocks)
    t0 = time.perf_counter()
    fill(m, num_blocks, chain_blocks, int(num_chains * referenced_fraction))
    build_s = time.perf_counter() - t0
    if m.pool.num_free_blocks:
        raise RuntimeError("fill left free blocks: evictions would not be timed")
    taker = sequence("taker", [0])
    lat = []
    n = min(num_evictions, m.pool.num_cached_blocks)
    for _ in range(n):
        t = time.perf_counter()
        status = m.allocate(taker, 1)
        lat.append(time.perf_counter() - t)
        if status is not AllocStatus.OK:
            raise RuntimeError(f"allocation {len(lat)} failed: {status}")
    return {
        "num_blocks": float(num_blocks),
        "build_s": build_s,
        "num_evictions": float(len(lat)),
        "evict_p50_us": (percentile(lat, 50) or 0.0) * 1e6,
        "evict_p99_us": (percentile(lat, 99) or 0.0) * 1e6,
        "evict_max_us": max(lat, default=0.0) * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    p.add_argument("--evictions", type=int, default=2000)
    p.add_argument("--policies", nargs="+", default=["lru"])
    p.add_argument("--referenced-fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    print("policy   num_blocks  build_s  evict_p50_us  evict_p99_us  evict_max_us")
    for policy in args.policies:
        for n in args.sizes:
            r = eviction_latency(
                n, args.evictions, policy, referenced_fraction=args.referenced_fraction
            )
            print(
                f"{policy:<8} {n:>10}  {r['build_s']:7.2f}  {r['evict_p50_us']:12.1f}"
                f"  {r['evict_p99_us']:12.1f}  {r['evict_max_us']:12.1f}"
            )
    print(f"the oldest {args.referenced_fraction:.0%} of the chains stay referenced")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
