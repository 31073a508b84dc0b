"""MockKVBackend: an in-memory ``KVBackendProtocol`` for unit tests of tiers and migration.

Blocks are tensors in a dict; ``corrupt(block_id)`` makes a block unreadable (read -> None),
standing in for a failed checksum.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

from sagellm.core.types import BlockId, TenantId
from sagellm.kv_runtime.free_list import fragmentation
from sagellm.kv_runtime.types import AllocationResult, KVBlockInfo, TierName


class MockKVBackend:
    """``num_blocks`` slots of ``block_shape`` tensors, FIFO free list."""

    def __init__(
        self,
        num_blocks: int,
        block_shape: tuple[int, ...] = (2, 2, 1, 4, 8),
        dtype: torch.dtype = torch.float32,
        tier: TierName = "device",
    ) -> None:
        self.tier: TierName = tier
        self.num_blocks = num_blocks
        self.block_shape = block_shape
        self.dtype = dtype
        n = 1
        for s in block_shape:
            n *= s
        self.block_bytes = n * torch.empty((), dtype=dtype).element_size()
        self._free: deque[BlockId] = deque(range(num_blocks))
        self._data: dict[BlockId, torch.Tensor | None] = {}
        self._owner: dict[BlockId, TenantId | None] = {}
        self.num_reads = 0
        self.num_writes = 0

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, n: int, tenant_id: TenantId | None = None) -> AllocationResult | None:
        if n > len(self._free):
            return None
        out = tuple(self._free.popleft() for _ in range(n))
        for b in out:
            self._owner[b] = tenant_id
        return AllocationResult(out, self.tier)

    def free(self, block_ids: Sequence[BlockId]) -> list[BlockId]:
        for b in block_ids:
            if b in self._free:
                raise ValueError(f"block {b} freed but not allocated")
            self._data.pop(b, None)
            self._owner.pop(b, None)
            self._free.append(b)
        return list(block_ids)

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

    def get_utilization(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def get_fragmentation(self) -> float:
        return fragmentation(self._free)

    def block_info(self, block_id: BlockId) -> KVBlockInfo:
        used = block_id not in self._free
        return KVBlockInfo(
            block_id, self.tier, self.block_bytes, self._owner.get(block_id), 0, int(used)
        )
