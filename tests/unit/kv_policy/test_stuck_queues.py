"""S3-FIFO and SIEVE under ``evictable_hints`` skip a search over blocks all known pinned,
and choose exactly the victims (and leave exactly the state) of the scanning search."""

import random

import pytest

from sagellm.kv_policy import PolicyContext, PoolStats, make_eviction_policy


def state(pol) -> tuple:
    if pol.name == "s3fifo":
        return list(pol._small), list(pol._main), dict(pol._freq)
    return dict(pol._visited), pol._hand, pol._tail, dict(pol._newer)


def run(name: str, seed: int, hints: bool):
    rng = random.Random(seed)
    pol = make_eviction_policy(name, 10)
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
    return out, state(pol)


@pytest.mark.parametrize("name", ["s3fifo", "sieve"])
@pytest.mark.parametrize("seed", range(6))
def test_stuck_queues_change_no_victim(name, seed):
    assert run(name, seed, True) == run(name, seed, False)


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


def test_sieve_skips_the_sweeps_when_everything_is_pinned():
    pol = make_eviction_policy("sieve", 4)
    for b in range(4):
        pol.on_miss(b)
        pol.on_insert(b)
    pol.on_access(2)
    calls = []
    ctx = PolicyContext(
        PoolStats(4, 4), is_evictable=lambda b: calls.append(b) or False, evictable_hints=True
    )
    assert pol.select_victims(ctx, 1).victims == ()  # sweeps: clears 2's bit, asks all
    asked = len(calls)
    assert pol.select_victims(ctx, 1).victims == ()
    assert len(calls) == asked  # nothing asked again: no block was reported evictable
    pol.on_evictable(3)
    ok = PolicyContext(PoolStats(4, 4), is_evictable=lambda b: b == 3, evictable_hints=True)
    assert pol.select_victims(ok, 1).victims == (3,)
