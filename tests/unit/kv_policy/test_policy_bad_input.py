"""Bad input: unknown policy names list the known ones; a capacity of 0 names its field."""

import pytest

from sagellm.kv_policy import make_eviction_policy


def test_unknown_policy_lists_known():
    with pytest.raises(ValueError, match=r"unknown kv_policy 'lruu'; known: arc, cost_aware, lfu"):
        make_eviction_policy("lruu", 10)


@pytest.mark.parametrize("cap", [0, -3, 2.5, None, True])
def test_bad_capacity_names_field(cap):
    with pytest.raises(ValueError, match="capacity_blocks"):
        make_eviction_policy("lru", cap)


def test_s3fifo_parameters_are_checked():
    with pytest.raises(ValueError, match="small_ratio"):
        make_eviction_policy("s3fifo", 10, small_ratio=1.5)
