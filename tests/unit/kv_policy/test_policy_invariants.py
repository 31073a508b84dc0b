"""Invariants under random streams (hypothesis): the cache never exceeds its capacity, victims
are tracked, distinct and evictable, a policy refuses only when nothing is evictable, and the
policy's size matches the runtime's residency."""

from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm.kv_policy import EVICTION_POLICIES, PolicyContext, PoolStats, make_eviction_policy

POLICY_NAMES = EVICTION_POLICIES.names()


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(POLICY_NAMES),
    capacity=st.integers(1, 12),
    stream=st.lists(st.integers(0, 30), min_size=1, max_size=200),
    pinned=st.frozensets(st.integers(0, 30), max_size=6),
    removes=st.lists(st.integers(0, 30), max_size=10),
)
def test_capacity_and_evictability(name, capacity, stream, pinned, removes):
    pol = make_eviction_policy(name, capacity)
    ctx = PolicyContext(PoolStats(capacity, capacity), is_evictable=lambda b: b not in pinned)
    cached: set[int] = set()
    removes = list(removes)
    for i, b in enumerate(stream):
        if b in cached:
            pol.on_access(b)
        else:
            pol.on_miss(b)
            if len(cached) >= capacity:
                victims = pol.select_victims(ctx, 1).victims
                assert len(victims) <= 1
                if not victims:  # back-pressure only when nothing is evictable
                    assert cached <= pinned
                for v in victims:
                    assert v in cached and v not in pinned
                    cached.remove(v)
            if len(cached) < capacity:
                pol.on_insert(b, prefix_tokens=16)
                cached.add(b)
        if i % 17 == 0 and removes:
            r = removes.pop()
            if r in cached:
                pol.on_remove(r)
                cached.remove(r)
        assert len(cached) <= capacity
        assert len(pol) == len(cached)
    # Everything unpinned can still be evicted, each block exactly once.
    victims = pol.select_victims(PolicyContext(PoolStats(capacity, len(cached))), len(cached))
    assert sorted(victims.victims) == sorted(cached)
    assert len(pol) == 0
