"""ParkingQueue against a plain recency list: with every turn to evictable reported, setting
unevictable blocks aside changes no victim."""

import random

import pytest

from sagellm.kv_policy.parking import ParkingQueue


@pytest.mark.parametrize("seed", range(5))
def test_parked_search_picks_the_plain_searchs_victims(seed):
    rng = random.Random(seed)
    q, ref = ParkingQueue(), []  # ref: oldest first
    blocked: set[int] = set()
    for step in range(3000):
        r = rng.random()
        if r < 0.3 or not ref:
            q.push(step)
            ref.append(step)
        elif r < 0.45:
            b = rng.choice(ref)
            q.touch(b)
            ref.remove(b)
            ref.append(b)
        elif r < 0.6:
            blocked.add(rng.choice(ref))
        elif r < 0.75 and blocked:
            b = rng.choice(sorted(blocked))
            blocked.remove(b)
            if b in q:
                q.on_evictable(b)
        elif r < 0.8:
            b = rng.choice(ref)
            q.remove(b)
            ref.remove(b)
            blocked.discard(b)
        else:
            n = rng.randrange(1, 4)
            want = [b for b in ref if b not in blocked][:n]
            assert q.pop_oldest(lambda b: b not in blocked, n, park=rng.random() < 0.8) == want
            for b in want:
                ref.remove(b)
        assert len(q) == len(ref)
    assert q.pop_oldest(None, len(ref)) == ref  # a search without a rule takes all, in order
