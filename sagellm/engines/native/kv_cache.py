"""The paged KV cache tensor (its blocks are handed out by kv_runtime.KVPool).

Layout (one tensor for the whole model)::

    kv[layer, 0 (K) | 1 (V), block, kv_head, slot_in_block, head_dim]

(kv_head before slot, unlike vLLM's GPU layout, so a gathered block is a ready [kvH, bs, D]
operand for the CPU attention's batched matmuls.)

A token at position ``p`` of a sequence whose block table is ``bt`` lives in block ``bt[p // B]``,
slot ``p % B`` (B = block_size_tokens); its flat slot index is ``bt[p // B] * B + p % B``.
"""

from __future__ import annotations

import torch

KV_SCALE_BYTES = 4  # one fp32 scale per (token, kv head) row of an int8 cache


def kv_row_width(head_dim: int, dtype: torch.dtype) -> int:
    """Last-dimension size of the cache tensor for ``dtype`` (int8 adds the scale bytes)."""
    return head_dim + KV_SCALE_BYTES if dtype == torch.int8 else head_dim


def kv_bytes_per_token(
    num_layers: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype
) -> int:
    """Cache bytes one token takes (K and V of every layer), scales included."""
    width = kv_row_width(head_dim, dtype)
    return num_layers * 2 * num_kv_heads * width * torch.empty(0, dtype=dtype).element_size()


def quantize_kv(x: torch.Tensor) -> torch.Tensor:
    """``x`` [..., D] (any float dtype) -> int8 rows [..., D + 4] (values, then fp32 scale)."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(xf / scale).clamp_(-127, 127).to(torch.int8)
    return torch.cat([q, scale.view(torch.int8)], dim=-1)


def dequantize_kv(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 rows [..., D + 4] -> values [..., D] in ``dtype``."""
    d = rows.shape[-1] - KV_SCALE_BYTES
    scale = rows[..., d:].contiguous().view(torch.float32)
    return (rows[..., :d].to(torch.float32) * scale).to(dtype)


class PagedKVCache:
    """Owns the KV tensor; ``layer(i)`` gives (K, V) views of shape [blocks, kv_heads, B, D]
    (``D + 4`` int8 columns when ``dtype`` is ``torch.int8``)."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size_tokens: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.block_size_tokens = block_size_tokens
        self.num_blocks = num_blocks
        self.kv = torch.zeros(
            (
                num_layers,
                2,
                num_blocks,
                num_kv_heads,
                block_size_tokens,
                kv_row_width(head_dim, dtype),
            ),
            dtype=dtype,
            device=device,
        )

    @property
    def num_bytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kv[i, 0], self.kv[i, 1]
