"""Host measurements the engine takes once at start (no hidden device constants)."""

from __future__ import annotations

import time

import torch

from sagellm.engines.native.arch import ModelArch
from sagellm.kv_policy.cost_benefit import PrefillFlopModel
from sagellm.kv_runtime import HierarchyManager, KVMigrator, KVPool, MigrationPlan, TierName


def measure_matmul_flops_per_s(
    device: torch.device, dtype: torch.dtype, n: int = 256, repeats: int = 5
) -> float:
    """Best-of-``repeats`` rate of one ``n x n`` matmul in the engine's device and dtype,
    FLOP/s (2 per multiply-add). A few milliseconds on a CPU."""
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got {n}, {repeats}")
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    best_s = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best_s = min(best_s, time.perf_counter() - t0)
    return 2.0 * n**3 / max(best_s, 1e-9)


def prefill_flop_model(arch: ModelArch) -> PrefillFlopModel:
    """The analytic prefill FLOP model of ``arch`` (the cost-aware policy's recompute cost)."""
    return PrefillFlopModel(
        num_params=arch.num_params,
        num_layers=arch.num_layers,
        attn_dim=arch.num_heads * arch.head_dim,
    )


def measure_tier_bandwidth(
    hierarchy: HierarchyManager, num_blocks: int = 4, repeats: int = 3
) -> dict[tuple[TierName, TierName], float]:
    """Bytes/s of real block copies ``device -> tier`` and ``tier -> device`` for each lower
    tier, through a private :class:`KVMigrator` (the engine's statistics see nothing). Free
    device blocks serve as scratch: call it before the pool holds any KV."""
    device = hierarchy.tier("device")
    if not isinstance(device, KVPool):
        raise ValueError(f"the device tier must be a KVPool, got {type(device).__name__}")
    mig = KVMigrator(hierarchy)
    for tier in hierarchy.tier_names[1:]:
        n = min(num_blocks, device.num_free_blocks, hierarchy.tier(tier).num_free_blocks)
        scratch = tuple(device.free_block_ids()[:n])
        for _ in range(repeats if n else 0):
            res = mig.migrate(MigrationPlan("device", tier, scratch, free_src=False))
            mig.migrate(MigrationPlan(tier, "device", res.dst_block_ids, scratch))  # type: ignore[arg-type]
    return {d: s.bandwidth_bytes_per_s for d, s in mig.stats.items() if s.bandwidth_bytes_per_s}
