import pytest
from hypothesis import given
from hypothesis import strategies as st

from sagellm.engines.native.kv_cache import BlockAllocator


def test_allocate_none_when_short_and_exact_ids():
    a = BlockAllocator(4)
    assert a.allocate(3) == [0, 1, 2]
    assert a.allocate(2) is None  # back-pressure, not an exception
    a.free([1])
    assert a.allocate(2) == [3, 1]
    assert a.num_free == 0


def test_double_free_rejected():
    a = BlockAllocator(2)
    ids = a.allocate(1)
    a.free(ids)
    with pytest.raises(ValueError, match="freed but not allocated"):
        a.free(ids)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5)), max_size=60))
def test_accounting_invariant(ops):
    a = BlockAllocator(16)
    held: list[list[int]] = []
    for alloc, n in ops:
        if alloc:
            got = a.allocate(n)
            if got is not None:
                held.append(got)
        elif held:
            a.free(held.pop(n % len(held)))
        flat = [b for h in held for b in h]
        assert len(flat) == len(set(flat)) == a.num_used
        assert a.num_free + a.num_used == 16
