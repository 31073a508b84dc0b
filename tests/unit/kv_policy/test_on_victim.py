"""``PolicyContext.on_victim`` sees every victim, in order, as it is chosen; a block that the
runtime reports evictable from inside it can be the next victim of the same call."""

import pytest

from sagellm.kv_policy import EVICTION_POLICIES, PolicyContext, PoolStats, make_eviction_policy


@pytest.mark.parametrize("hints", [True, False])
@pytest.mark.parametrize("name", EVICTION_POLICIES.names())
def test_on_victim_sees_each_victim_and_can_free_a_parked_block(name, hints):
    pol = make_eviction_policy(name, 8)
    for b in range(6):
        pol.on_miss(b)
        pol.on_insert(b, prefix_tokens=16)
    locked = {0, 1, 2, 3, 4}  # only block 5 is evictable until the first victim leaves
    seen: list[int] = []

    def on_victim(b: int) -> None:
        seen.append(b)
        if locked:
            locked.clear()
            for x in range(5):
                pol.on_evictable(x)

    ctx = PolicyContext(
        PoolStats(8, 6),
        is_evictable=lambda b: b not in locked,
        evictable_hints=hints,
        on_victim=on_victim,
    )
    victims = pol.select_victims(ctx, 6).victims
    assert list(victims) == seen
    assert victims[0] == 5 and sorted(victims) == list(range(6))
    assert len(pol) == 0
