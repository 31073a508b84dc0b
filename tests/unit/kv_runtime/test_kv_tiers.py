"""Tiers and migration: host pool, disk files with checksums, mock backend, capacities."""

import os

import pytest
import torch

from sagellm.kv_runtime import (
    DiskTier,
    HierarchyManager,
    KVMigrator,
    KVPool,
    MigrationPlan,
    MockKVBackend,
    capacity_blocks,
    make_host_tier,
)

SHAPE = (2, 2, 1, 4, 8)  # layers, K|V, kv_heads, block, head_dim


def blocks(n, start=0.0):
    return torch.stack([torch.full(SHAPE, start + i) for i in range(n)])


def test_capacity_in_blocks_or_bytes():
    assert capacity_blocks(3, None, 100, "host_tier") == 3
    assert capacity_blocks(None, 250, 100, "host_tier") == 2
    assert capacity_blocks(None, None, 100, "host_tier") is None
    with pytest.raises(ValueError, match="host_tier_bytes \\(50\\) holds no block of 100"):
        capacity_blocks(None, 50, 100, "host_tier")
    with pytest.raises(ValueError, match="not both"):
        capacity_blocks(1, 100, 100, "disk_tier")


def test_disk_roundtrip_and_corruption_is_a_miss(tmp_path):
    d = DiskTier(tmp_path, 4, SHAPE, torch.float32)
    ids = d.allocate(2).block_ids
    d.write_blocks(ids, blocks(2, 3.0))
    got, ok = d.read_blocks(ids)
    assert ok == (True, True) and torch.equal(got[1], torch.full(SHAPE, 4.0))
    raw = bytearray(d.path(ids[0]).read_bytes())
    raw[-1] ^= 0xFF  # flip one payload byte
    d.path(ids[0]).write_bytes(bytes(raw))
    assert d.read_blocks(ids)[1] == (False, True) and d.num_checksum_failures == 1
    d.path(ids[1]).write_bytes(d.path(ids[1]).read_bytes()[:40])  # truncated file
    assert d.read_blocks(ids)[1] == (False, False)
    d.free(ids)
    assert not list(d.dir.glob("*.kv"))
    d.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_disk_path_not_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(ValueError, match="kv_cache_dir .* is not writable"):
        DiskTier(ro / "cache", 2, SHAPE, torch.float32)


def test_disk_path_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="kv_cache_dir .* is not writable"):
        DiskTier(f, 2, SHAPE, torch.float32)


def test_migrate_device_host_disk_and_back(tmp_path):
    device = KVPool(torch.zeros(2, 2, 4, 1, 4, 8), block_dim=2)
    h = HierarchyManager.build(device, SHAPE, torch.float32, 4, 4, tmp_path)
    mig = KVMigrator(h)
    ids = device.allocate(2).block_ids
    device.write_blocks(ids, blocks(2, 1.0))
    to_host = mig.migrate(MigrationPlan("device", "host", ids))
    assert device.num_free_blocks == 4 and h.tier("host").num_used_blocks == 2
    to_disk = mig.migrate(MigrationPlan("host", "disk", to_host.dst_block_ids))
    assert h.tier("host").num_used_blocks == 0 and h.tier("disk").num_used_blocks == 2
    back = mig.migrate(MigrationPlan("disk", "device", to_disk.dst_block_ids))
    assert torch.equal(device.read_blocks(back.dst_block_ids)[0], blocks(2, 1.0))
    assert back.num_bytes == 2 * device.block_bytes and back.latency_s > 0
    assert mig.stats[("host", "disk")].num_blocks == 2
    assert [o.num_used_blocks for o in h.occupancy()] == [2, 0, 0]
    assert h.lower("device") == "host" and h.lower("disk") is None
    h.close()


def test_migrate_back_pressure_and_corrupt_source():
    dev = MockKVBackend(2, SHAPE)
    host = MockKVBackend(4, SHAPE, tier="host")
    mig = KVMigrator(HierarchyManager(dev, host))
    ids = host.allocate(3).block_ids
    host.write_blocks(ids, blocks(3))
    assert mig.migrate(MigrationPlan("host", "device", ids)) is None  # 3 > 2 free
    assert host.num_used_blocks == 3  # nothing moved
    host.corrupt(ids[0])
    res = mig.migrate(MigrationPlan("host", "device", ids[:2]))
    assert res.dst_block_ids == (None, 1) and res.num_failed == 1
    assert dev.num_used_blocks == 1  # the slot for the unreadable block was given back
    with pytest.raises(ValueError, match="tier 'disk' is not enabled"):
        mig.migrate(MigrationPlan("host", "disk", ids[2:]))


def test_host_tier_layout():
    t = make_host_tier(3, SHAPE, torch.float32)
    assert t.tier == "host" and t.num_blocks == 3 and t.tensor.shape == (3, *SHAPE)
