"""Exact eviction orders of each policy on small streams (worked by hand in comments)."""

import pytest

from sagellm.kv_policy import EVICTION_POLICIES, PolicyContext, PoolStats, make_eviction_policy

STREAM = [1, 2, 3, 1, 4, 5, 4, 6, 1, 7, 2, 8]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # recency after 1,2,3,1 is 2,3,1: 4 evicts 2, 5 evicts 3, ...
        ("lru", [2, 3, 1, 5, 4, 6, 1]),
        # counts 1:2 2:1 3:1; ties go first-in-first-out within a count
        ("lfu", [2, 3, 5, 6, 7, 2]),
        # the hand passes 1 (visited, cleared) and evicts 2; survivors never move
        ("sieve", [2, 3, 5, 4, 6, 7]),
        ("arc", [2, 3, 5, 6, 7, 2]),
        ("s3fifo", [2, 4, 5, 3, 6, 7, 2]),
    ],
)
def test_eviction_order(drive_policy, name, expected):
    assert drive_policy(name, 3, STREAM) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lru", [3, 1, 5, 4, 6, 1]),
        ("lfu", [3, 4, 5, 4, 6, 7]),
        ("sieve", [3, 1, 5, 4, 6, 1]),
        ("arc", [3, 4, 5, 1, 6, 4, 7]),
        ("s3fifo", [3, 4, 5, 1, 6, 1, 7]),
    ],
)
def test_pinned_block_is_never_a_victim(drive_policy, name, expected):
    victims = drive_policy(name, 3, STREAM, pinned=frozenset({2}))
    assert victims == expected
    assert 2 not in victims


def test_s3fifo_small_queue_promotion_and_ghost(drive_policy):
    # C=10: small 1, main 9, ghost 9. 1 enters small, 2..10 go to main (small full, nothing
    # evicted yet). 1 is hit twice -> promoted to main on 11's miss; 2 (hit once) is reinserted
    # with its counter decremented, 3 is evicted. 11 and 12 leave small unhit -> ghost.
    stream = [*range(1, 11), 1, 1, 2, 11, 12, 1, 3, 13, 14]
    assert drive_policy("s3fifo", 10, stream) == [3, 11, 12, 3, 13]


def test_s3fifo_ghost_hit_goes_to_main():
    pol = make_eviction_policy("s3fifo", 10)
    ctx = PolicyContext(PoolStats(10, 10))
    for b in range(10):
        pol.on_miss(b)
        pol.on_insert(b)
    pol.on_miss(10)
    assert pol.select_victims(ctx, 1).victims == (0,)  # small queue head, unhit -> ghost
    pol.on_insert(10)
    pol.on_miss(0)  # ghost hit
    assert pol.select_victims(ctx, 1).victims == (10,)
    pol.on_insert(0)
    assert 0 in pol._main


def test_arc_ghost_hit_adapts_target():
    pol = make_eviction_policy("arc", 2)
    ctx = PolicyContext(PoolStats(2, 2))
    for b in (1, 2):
        pol.on_miss(b)
        pol.on_insert(b)
    pol.on_access(2)  # T1 = [1], T2 = [2]
    pol.on_miss(3)
    assert pol.select_victims(ctx, 1).victims == (1,)  # |T1| = 1 > p = 0: T1 LRU -> B1
    pol.on_insert(3)
    pol.on_miss(1)  # B1 hit: p grows by max(|B2|/|B1|, 1) = 1
    assert pol.p_blocks == 1.0
    assert pol.select_victims(ctx, 1).victims == (2,)  # |T1| = 1 == p: T2 LRU -> B2
    pol.on_insert(1)
    assert len(pol) == 2


def test_select_many_and_len():
    for name in EVICTION_POLICIES.names():
        pol = make_eviction_policy(name, 8)
        for b in range(8):
            pol.on_miss(b)
            pol.on_insert(b, prefix_tokens=(b + 1) * 16)
        d = pol.select_victims(PolicyContext(PoolStats(8, 8)), 3)
        assert len(d.victims) == len(set(d.victims)) == 3, name
        assert len(pol) == 5, name
        assert pol.select_victims(PolicyContext(PoolStats(8, 8)), 0).victims == ()


def test_all_pinned_gives_back_pressure():
    for name in EVICTION_POLICIES.names():
        pol = make_eviction_policy(name, 4)
        for b in range(4):
            pol.on_miss(b)
            pol.on_insert(b)
        ctx = PolicyContext(PoolStats(4, 4), is_evictable=lambda b: False)
        assert pol.select_victims(ctx, 2).victims == (), name
        assert len(pol) == 4, name


def test_on_remove_forgets_block():
    for name in EVICTION_POLICIES.names():
        pol = make_eviction_policy(name, 4)
        for b in range(4):
            pol.on_miss(b)
            pol.on_insert(b)
        pol.on_remove(1)
        victims = pol.select_victims(PolicyContext(PoolStats(4, 3)), 3).victims
        assert sorted(victims) == [0, 2, 3], name


def test_s3fifo_falls_back_to_main_when_small_is_pinned():
    pol = make_eviction_policy("s3fifo", 10)
    for b in range(10):  # 0 -> small (1 slot), 1..9 -> main
        pol.on_miss(b)
        pol.on_insert(b)
    ctx = PolicyContext(PoolStats(10, 10), is_evictable=lambda b: b != 0)
    assert pol.select_victims(ctx, 2).victims == (1, 2)
