"""Helpers shared by the kv_policy tests."""

from __future__ import annotations

import pytest

from sagellm.kv_policy import PolicyContext, PoolStats, make_eviction_policy


def drive(name: str, capacity_blocks: int, stream, pinned=frozenset(), **kw) -> list[int]:
    """Feed ``stream`` to a policy the way the runtime does; return the victims in order."""
    pol = make_eviction_policy(name, capacity_blocks, **kw)
    ok = (lambda b: b not in pinned) if pinned else None
    ctx = PolicyContext(PoolStats(capacity_blocks, capacity_blocks), is_evictable=ok)
    cached: set[int] = set()
    victims: list[int] = []
    for b in stream:
        if b in cached:
            pol.on_access(b)
            continue
        pol.on_miss(b)
        if len(cached) >= capacity_blocks:
            v = pol.select_victims(ctx, 1).victims
            victims.extend(v)
            cached.difference_update(v)
        pol.on_insert(b)
        cached.add(b)
    return victims


@pytest.fixture
def drive_policy():
    return drive
