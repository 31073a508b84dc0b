"""The paged KV cache tensor and its block allocator.

Layout (one tensor for the whole model)::

    kv[layer, 0 (K) | 1 (V), block, kv_head, slot_in_block, head_dim]

(kv_head before slot, unlike vLLM's GPU layout, so a gathered block is a ready [kvH, bs, D]
operand for the CPU attention's batched matmuls.)

A token at position ``p`` of a sequence whose block table is ``bt`` lives in block ``bt[p // B]``,
slot ``p % B`` (B = block_size_tokens); its flat slot index is ``bt[p // B] * B + p % B``.
"""

from __future__ import annotations

from collections import deque

import torch

from sagellm.core.types import BlockId


class BlockAllocator:
    """A free list of KV block ids.

    Invariant: ``num_free + num_used == num_blocks``; a block is never handed out twice
    without a ``free`` in between. ``allocate`` returns ``None`` (back-pressure) rather than
    raising when too few blocks are free.
    """

    def __init__(self, num_blocks: int) -> None:
        self.num_blocks = num_blocks
        self._free: deque[BlockId] = deque(range(num_blocks))
        self._used: set[BlockId] = set()

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return len(self._used)

    def allocate(self, n: int) -> list[BlockId] | None:
        if n > len(self._free):
            return None
        out = [self._free.popleft() for _ in range(n)]
        self._used.update(out)
        return out

    def free(self, block_ids: list[BlockId]) -> None:
        for b in block_ids:
            if b not in self._used:
                raise ValueError(f"block {b} freed but not allocated")
            self._used.remove(b)
            self._free.append(b)


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
