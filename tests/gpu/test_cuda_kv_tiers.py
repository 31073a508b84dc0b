"""Prefix reuse with a pinned host tier on CUDA (run on a lent GPU machine; skipped without)."""

import pytest
import torch

from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.kv_runtime import HierarchyManager, KVMigrator, KVPool, MigrationPlan

pytestmark = pytest.mark.gpu


def test_cuda_migration_roundtrip_through_pinned_host(tmp_path):
    shape = (2, 2, 1, 4, 8)
    device = KVPool(torch.randn(2, 2, 8, 1, 4, 8, device="cuda"), block_dim=2)
    h = HierarchyManager.build(device, shape, torch.float32, 8, 8, tmp_path)
    assert h.tier("host").tensor.is_pinned()
    mig = KVMigrator(h)
    ids = device.allocate(5).block_ids
    before = device.read_blocks(ids)[0].clone()
    for src, dst in (("device", "host"), ("host", "disk"), ("disk", "host"), ("host", "device")):
        ids = mig.migrate(MigrationPlan(src, dst, ids)).dst_block_ids
    assert torch.equal(device.read_blocks(ids)[0], before)
    h.close()


def test_cuda_prefix_reuse_with_host_tier_equals_hf(tiny_checkpoint, tmp_path):
    model, folder = tiny_checkpoint("llama")
    engine = NativeEngine.from_pretrained(
        folder,
        device="cuda",
        block_size_tokens=4,
        num_kv_blocks=16,
        enable_prefix_caching=True,
        host_tier_blocks=4,
        disk_tier_blocks=32,
        kv_cache_dir=str(tmp_path),
    )
    g = torch.Generator().manual_seed(5)
    shared = torch.randint(0, 256, (24,), generator=g).tolist()
    prompts = [
        [*shared, 1],
        *[torch.randint(0, 256, (40,), generator=g).tolist() for _ in range(3)],
        [*shared, 2, 3],
    ]
    sp = SamplingParams(max_tokens=6, ignore_eos=True)
    outs = [engine.generate([p], sp)[0] for p in prompts]
    for p, o in zip(prompts, outs, strict=True):
        ref = model.generate(
            torch.tensor([p]), max_new_tokens=6, min_new_tokens=6, do_sample=False
        )[0, len(p) :].tolist()
        assert o == ref
    assert engine.stats()["num_loaded_blocks"] > 0
    engine.close()
