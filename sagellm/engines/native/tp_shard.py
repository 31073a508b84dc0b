"""Which slice of the model each tensor-parallel rank owns (Megatron-style, uneven allowed).

Per layer, rank ``r`` of ``tp_size`` owns whole KV heads ``[kv_lo, kv_hi)`` and the query heads
of their GQA groups ``[kv_lo * G, kv_hi * G)`` (``G = num_heads / num_kv_heads``), and
intermediate columns ``[ffn_lo, ffn_hi)``::

    qkv      column-parallel: rows of its q heads, k heads, v heads       (no communication)
    o        row-parallel:    columns of its q heads       -> partial sum -> all_reduce
    gate_up  column-parallel: rows [ffn_lo, ffn_hi) of gate and of up     (no communication)
    down     row-parallel:    columns [ffn_lo, ffn_hi)     -> partial sum -> all_reduce

Embedding, norms and lm_head are replicated; only rank 0 computes logits (it samples).
Splits need not be even: KV heads and intermediate columns are dealt out as evenly as possible,
the first ranks taking one more (SmolLM2-135M, 3 KV heads at tp=2: KV heads 2 + 1, query heads
6 + 3). Invariants: every rank owns >= 1 KV head and >= 1 intermediate column; the ranks'
slices partition each dimension, in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagellm.core.errors import ConfigError
from sagellm.engines.native.arch import ModelArch


def split_evenly(total: int, parts: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` of each of ``parts`` consecutive slices of ``total`` (sizes differ by at most
    one, larger first)."""
    base, extra = divmod(total, parts)
    out, lo = [], 0
    for r in range(parts):
        hi = lo + base + (1 if r < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


@dataclass(frozen=True)
class TPShard:
    """Rank ``rank``'s slice of every layer (head and column ranges are ``[lo, hi)``)."""

    rank: int
    tp_size: int
    kv_heads: tuple[int, int]
    heads: tuple[int, int]
    ffn: tuple[int, int]

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads[1] - self.kv_heads[0]

    @property
    def num_heads(self) -> int:
        return self.heads[1] - self.heads[0]


def plan_shards(arch: ModelArch, tp_size: int) -> list[TPShard]:
    """The slices of ranks ``0 .. tp_size - 1``; ConfigError naming the numbers when the model
    cannot be split that far."""
    if not isinstance(tp_size, int) or tp_size < 1:
        raise ConfigError(f"engine.tp_size must be an int >= 1, got {tp_size!r}")
    kvh, h, ffn = arch.num_kv_heads, arch.num_heads, arch.intermediate_size
    if tp_size > kvh:
        raise ConfigError(
            f"engine.tp_size {tp_size} exceeds the model's {kvh} KV heads: every rank owns "
            f"whole KV heads (allowed: 1..{kvh})"
        )
    if h % kvh:
        raise ConfigError(f"model has {h} query heads, not a multiple of its {kvh} KV heads")
    if tp_size > ffn:
        raise ConfigError(
            f"engine.tp_size {tp_size} exceeds the model's intermediate_size {ffn} "
            f"(allowed: 1..{min(kvh, ffn)})"
        )
    g = h // kvh
    return [
        TPShard(r, tp_size, (k0, k1), (k0 * g, k1 * g), f)
        for r, ((k0, k1), f) in enumerate(
            zip(split_evenly(kvh, tp_size), split_evenly(ffn, tp_size), strict=True)
        )
    ]
