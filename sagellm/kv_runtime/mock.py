"""MockKVBackend: an in-memory ``KVBackendProtocol`` for unit tests of tiers and migration.

Blocks are tensors in a dict; ``corrupt(block_id)`` makes a block unreadable (read -> None),
standing in for a failed checksum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sagellm.core.types import BlockId
from sagellm.kv_runtime.slots import BlockSlots
from sagellm.kv_runtime.types import TierName


class MockKVBackend(BlockSlots):
    """``num_blocks`` slots of ``block_shape`` tensors, FIFO free list."""

    def __init__(
        self,
        num_blocks: int,
        block_shape: tuple[int, ...] = (2, 2, 1, 4, 8),
        dtype: torch.dtype = torch.float32,
        tier: TierName = "device",
    ) -> None:
        self.tier: TierName = tier
        self._init_slots(num_blocks, block_shape, dtype)
        self._data: dict[BlockId, torch.Tensor | None] = {}
        self.num_reads = 0
        self.num_writes = 0

    def _drop(self, block_id: BlockId) -> None:
        self._data.pop(block_id, None)

    def read_blocks(self, block_ids: Sequence[BlockId]) -> tuple[torch.Tensor, tuple[bool, ...]]:
        self.num_reads += len(block_ids)
        out = torch.zeros((len(block_ids), *self.block_shape), dtype=self.dtype)
        ok = []
        for i, b in enumerate(block_ids):
            blk = self._data.get(b)
            ok.append(blk is not None)
            if blk is not None:
                out[i] = blk
        return out, tuple(ok)

    def write_blocks(self, block_ids: Sequence[BlockId], data: torch.Tensor) -> None:
        self.num_writes += len(block_ids)
        for b, blk in zip(block_ids, data.unbind(0), strict=True):
            self._data[b] = blk.clone()

    def corrupt(self, block_id: BlockId) -> None:
        self._data[block_id] = None
