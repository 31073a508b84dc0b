"""Differential test: our policies against libCacheSim's built-ins on the same block streams.

Each block lookup is one unit-size libcachesim request; capacity is in blocks (= bytes there).
The five policies follow libCacheSim's definitions, so hit counts must agree exactly; the
acceptance bound (0.5 percentage points) is asserted too, for the record.
"""

import pytest

from sagellm.kv_policy import make_eviction_policy, simulate
from sagellm.kv_policy.traces import multi_turn_trace, scan_trace, zipf_trace

libcachesim = pytest.importorskip("libcachesim")
from sagellm.kv_policy.oracle import oracle_replay  # noqa: E402

POLICIES = ["lru", "lfu", "arc", "s3fifo", "sieve"]
TRACES = {
    "zipf": zipf_trace(4_000, blocks_per_request=8, num_objects=3_000, alpha=0.9, seed=1),
    "scan": scan_trace(1_500, blocks_per_request=8, num_objects=2_000, scan_blocks=200, seed=2),
    "multi_turn": multi_turn_trace(num_sessions=150, turns_per_session=4, seed=3),
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("trace", sorted(TRACES))
@pytest.mark.parametrize("capacity_blocks", [20, 100, 500, 2000])
def test_hit_ratio_equals_libcachesim(policy, trace, capacity_blocks):
    reqs = TRACES[trace].requests
    ours = simulate(make_eviction_policy(policy, capacity_blocks), reqs)
    theirs = oracle_replay(policy, reqs, capacity_blocks)
    assert ours.num_accesses == theirs.num_accesses
    assert abs(ours.hit_ratio - theirs.hit_ratio) <= 0.005
    assert ours.num_hits == theirs.num_hits, (ours.hit_ratio, theirs.hit_ratio)
