"""S3-FIFO under ``evictable_hints`` skips a queue whose blocks are all known pinned, and
chooses exactly the victims (and leaves exactly the queue order) of the scanning search."""

import random

import pytest

from sagellm.kv_policy import PolicyContext, PoolStats, make_eviction_policy


def run(seed: int, hints: bool):
    rng = random.Random(seed)
    pol = make_eviction_policy("s3fifo", 10)
    pinned: set[int] = set()
    ctx = PolicyContext(
        PoolStats(10, 10), is_evictable=lambda b: b not in pinned, evictable_hints=hints
    )
    cached: set[int] = set()
    out = []
    for _ in range(600):
        r = rng.random()
        b = rng.randrange(30)
        if r < 0.15 and cached:  # pin or unpin a cached block (unpin is reported)
            c = rng.choice(sorted(cached))
            if c in pinned:
                pinned.discard(c)
                pol.on_evictable(c)
            else:
                pinned.add(c)
            continue
        if b in cached:
            pol.on_access(b)
            continue
        pol.on_miss(b)
        if len(cached) >= 10:
            v = pol.select_victims(ctx, 1).victims
            out.append(v)
            cached.difference_update(v)
            if not v:
                continue
        pol.on_insert(b)
        cached.add(b)
    return out, list(pol._small), list(pol._main)


@pytest.mark.parametrize("seed", range(6))
def test_stuck_queues_change_no_victim(seed):
    assert run(seed, True) == run(seed, False)


def test_an_all_pinned_small_queue_is_skipped():
    pol = make_eviction_policy("s3fifo", 10)  # S holds 1 block
    for b in range(10):
        pol.on_miss(b)
        pol.on_insert(b)
    pinned = set(pol._small)
    calls = []

    def ok(b):
        calls.append(b)
        return b not in pinned

    ctx = PolicyContext(PoolStats(10, 10), is_evictable=ok, evictable_hints=True)
    first = pol.select_victims(ctx, 1).victims
    asked = len(calls)
    second = pol.select_victims(ctx, 1).victims
    assert first and second and not pinned & {*first, *second}
    assert len(calls) - asked == 1  # S was not scanned again: only M's head was asked
