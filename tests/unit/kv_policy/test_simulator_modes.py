"""Simulator counts on small streams: hits, prefix hits, wrong evictions, pinning, leaves-first."""

from sagellm.kv_policy import make_eviction_policy, simulate
from sagellm.kv_policy.cost_benefit import PrefillFlopModel


def test_object_mode_counts():
    reqs = [(1, 2), (3, 1), (2, 4)]
    r = simulate(make_eviction_policy("lru", 2), reqs, window_accesses=3)
    # 1 2 | 3(evict 1) 1(miss, evict 2; 1 came back 1 lookup after eviction) | 2(miss) 4(miss)
    assert (r.num_accesses, r.num_hits, r.num_evictions) == (6, 0, 4)
    assert r.num_wrong_evictions == 2  # 1 and 2 were requested again within 3 lookups
    assert r.num_requests == 3 and r.hit_ratio == 0.0


def test_prefix_hits_stop_at_first_miss():
    reqs = [(1, 2, 3), (1, 9, 3)]
    r = simulate(make_eviction_policy("lru", 10), reqs)
    assert r.num_hits == 2 and r.num_prefix_hits == 1  # block 3 hit after a miss is unusable


def test_pinned_request_bypasses_when_it_overflows():
    r = simulate(make_eviction_policy("lru", 2), [(1, 2, 3)], pin_request_blocks=True)
    assert r.num_bypassed == 1 and r.num_evictions == 0


def test_leaves_first_keeps_the_parent():
    # capacity 3: chain 1->2->3 cached; the next request's miss must evict leaf 3, not 1 or 2
    reqs = [(1, 2, 3), (7,), (1, 2)]
    r = simulate(make_eviction_policy("lru", 3), reqs, leaves_first=True)
    assert r.num_hits == 2 and r.num_prefix_hits == 2
    plain = simulate(make_eviction_policy("lru", 3), reqs)
    assert plain.num_prefix_hits == 0  # plain LRU evicts 1, the root


def test_flops_saved_counts_prefix_hits():
    fm = PrefillFlopModel(num_params=10, num_layers=1, attn_dim=1)
    r = simulate(make_eviction_policy("lru", 10), [(1, 2), (1, 5)], block_tokens=1, flop_model=fm)
    per_pos = [fm.block_flops(1, 1), fm.block_flops(2, 1)]
    assert r.prefill_flops_total == 2 * sum(per_pos)
    assert r.prefill_flops_saved == per_pos[0]
