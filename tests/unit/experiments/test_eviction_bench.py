"""The eviction benchmark's ci size: every timed allocation evicts exactly one cached block,
never one a running sequence holds, in the policy's order."""

import torch

from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.experiments.eviction_bench import eviction_latency, fill, sequence


def test_ci_size_times_one_eviction_per_allocation():
    r = eviction_latency(640, num_evictions=50, chain_blocks=64, referenced_fraction=0.5)
    assert r["num_evictions"] == 50 and r["num_blocks"] == 640
    assert 0 < r["evict_p50_us"] <= r["evict_p99_us"] <= r["evict_max_us"]


def test_victims_skip_held_chains_in_lru_order():
    m = NativeKVManager(torch.zeros(1, 2, 12, 1, 1, 1), 2, enable_prefix_caching=True)
    held = fill(m, 12, chain_blocks=4, num_held_chains=1)  # chain 0 held, 1 and 2 cached
    assert m.pool.num_free_blocks == 0 and m.pool.num_cached_blocks == 8
    held_blocks = list(held[0].block_ids)
    taker = sequence("taker", [0])
    for _ in range(5):
        assert m.allocate(taker, 1) is AllocStatus.OK
    # chain 1 (blocks 4-7) is older than chain 2 (8-11): its leaf first, then up the chain
    assert taker.block_ids == [7, 6, 5, 4, 11]
    assert held[0].block_ids == held_blocks and m.tracker.num_victims == 5
    assert m.allocate(taker, 4) is AllocStatus.NO_BLOCKS  # only 3 evictable blocks are left
