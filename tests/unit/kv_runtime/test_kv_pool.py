"""KVPool: exact block ids, ref counting, cached blocks, copy-on-write, fragmentation."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sagellm.kv_runtime import KVPool


def pool(n=8):
    # device layout [layers=2, K|V, blocks, kv_heads=1, block=2, head_dim=3]
    return KVPool(torch.zeros(2, 2, n, 1, 2, 3), block_dim=2)


def test_allocate_fifo_and_back_pressure():
    p = pool(4)
    assert p.allocate(3).block_ids == (0, 1, 2)
    assert p.allocate(2) is None  # back-pressure, nothing taken
    assert p.num_free_blocks == 1
    p.free([1])
    assert p.allocate(2).block_ids == (3, 1)
    assert p.get_utilization() == 1.0


def test_shared_block_freed_only_at_last_reference():
    p = pool()
    (b,) = p.allocate(1).block_ids
    p.incref([b])
    assert p.free([b]) == []
    assert p.ref_count(b) == 1
    assert p.free([b]) == [b]
    with pytest.raises(ValueError, match="freed but not allocated"):
        p.free([b])


def test_cacheable_block_kept_until_reclaimed():
    p = pool(2)
    a, b = p.allocate(2).block_ids
    p.set_cacheable(a, True)
    p.free([a, b])
    assert p.is_cached(a) and p.num_cached_blocks == 1 and p.num_free_blocks == 1
    p.incref([a])  # a prefix hit revives it
    assert p.ref_count(a) == 1 and not p.is_cached(a)
    p.free([a])
    p.reclaim([a])
    assert p.num_free_blocks == 2 and p.num_cached_blocks == 0


def test_copy_on_write_copies_shared_block():
    p = pool(4)
    (a,) = p.allocate(1).block_ids
    p.tensor[:, :, a] = 7.0
    assert p.copy_on_write(a) == a  # sole owner: write in place
    p.incref([a])
    new = p.copy_on_write(a)
    assert new != a and p.ref_count(a) == 1 and p.ref_count(new) == 1
    assert torch.equal(p.tensor[:, :, new], p.tensor[:, :, a])


def test_read_write_roundtrip_canonical_layout():
    p = pool(4)
    data = torch.arange(2 * 2 * 2 * 1 * 2 * 3, dtype=torch.float32).view(2, 2, 2, 1, 2, 3)
    p.write_blocks([3, 1], data)
    got, ok = p.read_blocks([3, 1])
    assert ok == (True, True)
    assert torch.equal(got, data)
    assert torch.equal(p.tensor[:, :, 3], data[0])


def test_fragmentation():
    p = pool(8)
    p.allocate(8)
    assert p.get_fragmentation() == 0.0
    p.free([1, 3, 4, 6])  # runs 1, 2, 1
    assert p.get_fragmentation() == pytest.approx(1 - 2 / 4)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["alloc", "free", "share", "cache"]), st.integers(0, 5))))
def test_pool_accounting_invariants(ops):
    p = pool(6)
    held: list[int] = []  # one entry per reference we own
    for op, k in ops:
        if op == "alloc":
            got = p.allocate(k % 3)
            if got is not None:
                held.extend(got.block_ids)
        elif op == "free" and held:
            p.free([held.pop(k % len(held))])
        elif op == "share" and held:
            b = held[k % len(held)]
            p.incref([b])
            held.append(b)
        elif op == "cache" and held:
            p.set_cacheable(held[k % len(held)], True)
        assert p.num_free_blocks + p.num_referenced_blocks + p.num_cached_blocks == 6
        for b in set(held):
            assert p.ref_count(b) == held.count(b)
        assert p.num_referenced_blocks == len(set(held))


def test_copy_listeners_see_every_in_tensor_block_copy():
    """A tensor-parallel engine replays these copies on the other ranks' caches."""
    p = pool(4)
    seen = []
    p.copy_listeners.append(lambda src, dst: seen.append((src, dst)))
    (a,) = p.allocate(1).block_ids
    assert p.copy_on_write(a) == a and seen == []  # in place: nothing copied
    p.incref([a])
    new = p.copy_on_write(a)
    p.move_block(new, 3)
    assert seen == [(a, new), (new, 3)]
