"""Lookup latency of :class:`PrefixReuseIndex` as it grows (1e3 -> 1e6 blocks).

The index is filled with chains of ``chain_blocks`` blocks (distinct first blocks, so the tree
is a forest of long paths, like many long prompts); each timed lookup asks for a stored chain
plus a fresh tail (a full-depth hit) or a random prompt (a miss at the first block).

A lookup gets the prompt's chained block hashes, as the engine's does: a sequence hashes each
full block once, when it completes, and keeps the chain (``Sequence.block_hashes``), so a
lookup is one dict probe per block and one compare of the last block's tokens (the index
trusts its 64-bit BLAKE2b chain; see ``PrefixReuseIndex.trust_hash_chain``). The one-time
cost of hashing a whole prompt is reported beside it (``hash_chain_*``).

Run: ``python -m sagellm.experiments.prefix_lookup_bench --sizes 1000 10000 100000 1000000``
"""

from __future__ import annotations

import argparse
import random
import time

from sagellm.benchmarks.metrics import percentile
from sagellm.prefix_reuse import PrefixReuseIndex


def lookup_latency(
    num_blocks: int,
    num_lookups: int = 2000,
    block_size_tokens: int = 16,
    chain_blocks: int = 64,
    hit_fraction: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """Fill an index with ``num_blocks`` blocks and time ``num_lookups`` lookups; latencies in
    microseconds, overall and split into hits (full 64-block matches) and misses, and the
    one-time hashing of a query's ``chain_blocks`` blocks (``hash_chain_*``)."""
    rng = random.Random(seed)
    ix = PrefixReuseIndex(block_size_tokens)
    chain_tokens = chain_blocks * block_size_tokens
    chains: list[list[int]] = []
    t0 = time.perf_counter()
    inserted = 0
    while inserted < num_blocks:
        n = min(chain_blocks, num_blocks - inserted)
        toks = [len(chains)] + [rng.randrange(50_000) for _ in range(n * block_size_tokens - 1)]
        ix.insert(toks, list(range(inserted, inserted + n)))
        chains.append(toks)
        inserted += n
    build_s = time.perf_counter() - t0
    lat: dict[bool, list[float]] = {True: [], False: []}
    chain: list[float] = []
    for _ in range(num_lookups):
        want_hit = rng.random() < hit_fraction
        if want_hit:
            q = [*rng.choice(chains), 1, 2, 3]
        else:
            q = [rng.randrange(50_000) for _ in range(chain_tokens + 3)]
        t = time.perf_counter()
        hashes = ix.block_hashes(q, None, chain_blocks)
        chain.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = ix.lookup(q, hashes=hashes)
        lat[res.hit.matched_length > 0].append(time.perf_counter() - t)
    out = {
        "num_blocks": float(len(ix)),
        "build_s": build_s,
        "query_blocks": float(chain_blocks),
        "hit_fraction": len(lat[True]) / num_lookups,
    }
    named = {"lookup": lat[True] + lat[False], "hit": lat[True], "miss": lat[False]}
    for name, xs in (*named.items(), ("hash_chain", chain)):
        out[f"{name}_p50_us"] = (percentile(xs, 50) or 0.0) * 1e6
        out[f"{name}_p99_us"] = (percentile(xs, 99) or 0.0) * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    p.add_argument("--lookups", type=int, default=2000)
    args = p.parse_args(argv)
    print("num_blocks  build_s  hit_p50_us  hit_p99_us  miss_p50_us  miss_p99_us  hash_p50_us")
    for n in args.sizes:
        r = lookup_latency(n, args.lookups)
        print(
            f"{int(r['num_blocks']):>10}  {r['build_s']:7.2f}  {r['hit_p50_us']:10.1f}"
            f"  {r['hit_p99_us']:10.1f}  {r['miss_p50_us']:11.1f}  {r['miss_p99_us']:11.1f}"
            f"  {r['hash_chain_p50_us']:11.1f}"
        )
    print("hit = a stored 64-block chain plus a tail (64 blocks matched); miss = random tokens;")
    print("hash = hashing a 64-block prompt once (kept on the sequence, not in the lookup)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
