"""Recompute-versus-transfer arithmetic, calibrated from measured rates passed in by the caller.

Nothing here hides a device constant: prefill FLOPs come from the model's shape, seconds from
the FLOP/s and tier bandwidths the caller measured (``measure_*`` helpers do it on this host).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from sagellm.kv_policy.types import BlockStats, MigrationEstimate, Tier


@dataclass(frozen=True)
class PrefillFlopModel:
    """Analytic prefill FLOPs of a decoder: ``2 * num_params`` per token for the linear layers
    plus ``4 * num_layers * attn_dim * (t + 1)`` for token ``t``'s causal attention (QK^T and
    AV over its ``t + 1`` keys). ``num_params`` excludes embeddings."""

    num_params: int  # non-embedding parameters
    num_layers: int
    attn_dim: int  # num_heads * head_dim

    def __post_init__(self) -> None:
        for k in ("num_params", "num_layers", "attn_dim"):
            if getattr(self, k) < 1:
                raise ValueError(f"flop_model.{k} must be >= 1, got {getattr(self, k)}")

    def flops(self, start_tokens: int, end_tokens: int) -> float:
        """FLOPs to prefill tokens ``[start_tokens, end_tokens)`` given the earlier ones cached."""
        n = end_tokens - start_tokens
        if n < 0 or start_tokens < 0:
            raise ValueError(f"token range must satisfy 0 <= start <= end, got {start_tokens}")
        attn_pairs = (end_tokens * (end_tokens + 1) - start_tokens * (start_tokens + 1)) / 2
        return 2.0 * self.num_params * n + 4.0 * self.num_layers * self.attn_dim * attn_pairs

    def block_flops(self, prefix_tokens: int, block_tokens: int) -> float:
        """FLOPs to recompute the block that completes a ``prefix_tokens``-token prefix."""
        return self.flops(max(prefix_tokens - block_tokens, 0), prefix_tokens)

    @classmethod
    def smollm2_135m(cls) -> PrefillFlopModel:
        """SmolLM2-135M's shape (30 layers, hidden 576, 9 heads x 64; ~106M non-embedding)."""
        return cls(num_params=106_000_000, num_layers=30, attn_dim=576)


def measure_matmul_flops_per_s(n: int = 512, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 ``n x n`` matmul rate of this host (numpy), FLOP/s."""
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def measure_copy_bandwidth_bytes_per_s(num_bytes: int = 64 << 20, repeats: int = 3) -> float:
    """Best-of-``repeats`` host memory copy rate (numpy), bytes/s."""
    import numpy as np

    src = np.ones(num_bytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return num_bytes / best


@dataclass(frozen=True)
class RooflineCostBenefitModel:
    """Recompute time = block FLOPs / ``flops_per_s``; transfer time = bytes / bandwidth of the
    target tier: ``bandwidth_bytes_per_s`` into it (store), ``load_bandwidth_bytes_per_s`` back
    to the device (load; None = the store rates). Expected benefit of keeping a block in
    ``dst`` rather than dropping it: ``p_reuse * (recompute_s - load_s) - store_s`` seconds,
    where ``recompute_s`` covers the block and its ``descendant_prefix_tokens`` (lost with it).
    """

    flop_model: PrefillFlopModel
    flops_per_s: float  # measured prefill rate of the engine (or matmul rate as a bound)
    bandwidth_bytes_per_s: Mapping[Tier, float]  # copy rate into each lower tier (store)
    load_bandwidth_bytes_per_s: Mapping[Tier, float] | None = None  # tier -> device; None = same

    def __post_init__(self) -> None:
        if self.flops_per_s <= 0:
            raise ValueError(f"cost_benefit.flops_per_s must be > 0, got {self.flops_per_s}")
        for field, rates in (
            ("bandwidth_bytes_per_s", self.bandwidth_bytes_per_s),
            ("load_bandwidth_bytes_per_s", self.load_bandwidth_bytes_per_s or {}),
        ):
            for tier, bw in rates.items():
                if bw <= 0:
                    raise ValueError(f"cost_benefit.{field}[{tier!r}] must be > 0, got {bw}")

    def recompute_s(self, prefix_tokens: int, block_tokens: int) -> float:
        return self.flop_model.block_flops(prefix_tokens, block_tokens) / self.flops_per_s

    def transfer_s(self, size_bytes: int, tier: Tier, load: bool = False) -> float:
        """Seconds to copy ``size_bytes`` into ``tier`` (or, with ``load``, back from it)."""
        rates = self.bandwidth_bytes_per_s
        if load and self.load_bandwidth_bytes_per_s is not None:
            rates = self.load_bandwidth_bytes_per_s
        try:
            bw = rates[tier]
        except KeyError:
            known = ", ".join(sorted(rates))
            raise ValueError(f"no bandwidth for tier {tier!r}; known: {known}") from None
        return size_bytes / bw

    def evaluate_migration(
        self, block: BlockStats, dst: Tier | None, p_reuse: float
    ) -> MigrationEstimate:
        if not 0.0 <= p_reuse <= 1.0:
            raise ValueError(f"p_reuse must be in [0, 1], got {p_reuse}")
        rec = self.recompute_s(block.prefix_tokens, block.block_tokens)
        rec += sum(self.recompute_s(p, block.block_tokens) for p in block.descendant_prefix_tokens)
        if dst is None:
            return MigrationEstimate(rec, None, None, p_reuse, 0.0)
        store = self.transfer_s(block.size_bytes, dst)
        load = self.transfer_s(block.size_bytes, dst, load=True)
        return MigrationEstimate(rec, store, load, p_reuse, p_reuse * (rec - load) - store)
