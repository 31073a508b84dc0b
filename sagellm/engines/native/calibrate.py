"""Host measurements the engine takes once at start (no hidden device constants)."""

from __future__ import annotations

import time

import torch

from sagellm.engines.native.arch import ModelArch
from sagellm.kv_policy.cost_benefit import PrefillFlopModel


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
