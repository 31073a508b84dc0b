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


class PagedKVCache:
    """Owns the KV tensor; ``layer(i)`` gives (K, V) views of shape [blocks, kv_heads, B, D]."""

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
            (num_layers, 2, num_blocks, num_kv_heads, block_size_tokens, head_dim),
            dtype=dtype,
            device=device,
        )

    @property
    def num_bytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.kv[i, 0], self.kv[i, 1]
