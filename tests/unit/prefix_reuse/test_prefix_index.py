"""PrefixReuseIndex: exact hits, caps, salts, invalidation and eviction order."""

import pytest

from sagellm.prefix_reuse import PrefixReuseIndex


def idx(bs=4, **kw):
    return PrefixReuseIndex(bs, **kw)


def test_block_size_must_be_positive():
    with pytest.raises(ValueError, match="block_size_tokens must be an integer > 0"):
        PrefixReuseIndex(0)
    with pytest.raises(ValueError, match="block_size_tokens"):
        PrefixReuseIndex(-4)


def test_empty_and_short_queries_miss():
    ix = idx()
    assert ix.lookup([]).hit.matched_length == 0
    assert ix.lookup([1, 2, 3]).hit.remaining_tokens == 3
    assert ix.lookup([1, 2, 3]).hit.confidence == 0.0


def test_insert_then_lookup_returns_blocks_in_order():
    ix = idx()
    toks = list(range(10))
    entries = ix.insert(toks, [7, 3, 9])  # 2 full blocks: only 7 and 3 are indexed
    assert [e.kv_block_ids for e in entries] == [(7,), (3,)]
    assert [e.token_length for e in entries] == [4, 8]
    assert entries[1].parent_entry_id == entries[0].entry_id
    res = ix.lookup([*range(10), 99])
    assert res.hit.matched_length == 8
    assert res.hit.remaining_tokens == 3
    assert res.hit.confidence == 1.0
    assert res.block_ids == (7, 3)


def test_hit_is_capped_at_num_tokens_minus_one():
    ix = idx()
    ix.insert(list(range(8)), [0, 1])
    # the whole 8-token prompt is cached, but its last token must be recomputed
    assert ix.lookup(list(range(8))).hit.matched_length == 4
    assert ix.lookup(list(range(9))).hit.matched_length == 8


def test_divergence_stops_match_and_branches_share_parent():
    ix = idx()
    a = ix.insert([1, 2, 3, 4, 5, 6, 7, 8], [10, 11])
    b = ix.insert([1, 2, 3, 4, 9, 9, 9, 9], [20, 21])
    assert b[0].entry_id == a[0].entry_id and b[0].kv_block_ids == (10,)  # not adopted
    assert b[1].kv_block_ids == (21,)
    assert len(ix) == 3
    assert ix.lookup([1, 2, 3, 4, 9, 9, 9, 9, 0]).block_ids == (10, 21)
    assert ix.lookup([1, 2, 3, 4, 5, 6, 7, 0, 0]).block_ids == (10,)
    ix.check_invariants()


def test_salt_isolates_tenants():
    ix = idx()
    ix.insert(list(range(8)), [0, 1], salt="tenant-a")
    assert ix.lookup(list(range(9)), salt="tenant-b").hit.matched_length == 0
    assert ix.lookup(list(range(9))).hit.matched_length == 0
    assert ix.lookup(list(range(9)), salt="tenant-a").hit.matched_length == 8


def test_invalidate_removes_subtree():
    ix = idx()
    e = ix.insert(list(range(12)), [0, 1, 2])
    removed = ix.invalidate(e[1].entry_id)
    assert sorted(r.kv_block_ids[0] for r in removed) == [1, 2]
    assert ix.lookup(list(range(13))).block_ids == (0,)
    assert ix.invalidate(e[1].entry_id) == []
    ix.check_invariants()


def test_leaf_answers_for_childless_entries_only():
    ix = idx()
    e = ix.insert(list(range(12)), [0, 1, 2])
    assert ix.leaf(e[2].entry_id) == e[2]
    assert ix.leaf(e[0].entry_id) is None and ix.leaf(e[1].entry_id) is None  # inner
    ix.invalidate(e[2].entry_id)
    assert ix.leaf(e[2].entry_id) is None  # gone
    assert ix.leaf(e[1].entry_id) == e[1]  # its parent is a leaf now


def test_evict_lru_exact_order_leaf_first():
    ix = idx()
    ix.insert([1] * 8, [0, 1])  # chain A: blocks 0 -> 1
    ix.insert([2] * 4, [2])  # chain B: block 2
    ix.insert([3] * 4, [3])  # chain C: block 3
    ix.lookup([2] * 5)  # B recently used
    order = [e.kv_block_ids[0] for e in ix.evict_lru(4)]
    # A's leaf before its parent (same stamp, deeper first), then C (older than B), then B
    assert order == [1, 0, 3, 2]
    assert len(ix) == 0


def test_evict_respects_predicate_and_count():
    ix = idx()
    ix.insert([1] * 4, [0])
    ix.insert([2] * 4, [1])
    out = ix.evict_lru(5, can_evict=lambda e: e.kv_block_ids != (0,))
    assert [e.kv_block_ids for e in out] == [(1,)]
    assert len(ix) == 1


def test_select_victims_does_not_remove():
    ix = idx()
    ix.insert([1] * 8, [0, 1])
    ix.insert([2] * 4, [2])
    v = ix.select_victims(2)
    assert [e.kv_block_ids for e in v] == [(1,), (0,)]
    assert len(ix) == 3


def test_relocate_and_remap():
    ix = idx()
    e = ix.insert([1] * 8, [5, 6])
    ix.relocate(e[0].entry_id, [0], "host")
    assert ix.get(e[0].entry_id).tier == "host"
    assert ix.remap_blocks({6: 2}) == 1
    res = ix.lookup([1] * 9)
    assert [(x.tier, x.kv_block_ids) for x in res.entries] == [("host", (0,)), ("device", (2,))]


def test_metrics_rates_and_collisions():
    ix = idx()
    ix.insert(list(range(8)), [0, 1])
    ix.lookup(list(range(9)))  # 8 of 9 tokens
    ix.lookup([50] * 9)  # miss
    s = ix.metrics.snapshot()
    assert s.num_requests == 2 and s.num_hit_requests == 1
    assert s.request_hit_rate == 0.5
    assert s.token_hit_rate == pytest.approx(8 / 18)
    assert s.mean_matched_length_tokens == 4.0
    assert s.lookup_p50_s is not None and s.lookup_p99_s >= s.lookup_p50_s
    assert s.num_collisions == 0
