"""BlockSlots: the bookkeeping every fixed-size block store shares (disk tier, mock backend).

Invariant: every id in ``[0, num_blocks)`` is either in the FIFO free list or allocated (with
an owner tenant, possibly None), never both. Subclasses hold the block bytes and override
:meth:`_drop` to forget a freed block's data.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import torch

from sagellm.core.types import BlockId, TenantId
from sagellm.kv_runtime.free_list import fragmentation
from sagellm.kv_runtime.types import AllocationResult, KVBlockInfo, TierName


class BlockSlots:
    tier: TierName

    def _init_slots(self, num_blocks: int, block_shape: Sequence[int], dtype: torch.dtype) -> None:
        self.num_blocks = num_blocks
        self.block_shape = tuple(block_shape)
        self.dtype = dtype
        self.block_bytes = math.prod(block_shape) * torch.empty((), dtype=dtype).element_size()
        self._free: deque[BlockId] = deque(range(num_blocks))
        self._owner: dict[BlockId, TenantId | None] = {}
        self._last_access = [0] * num_blocks  # a store's own write clock, 0 = never

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, n: int, tenant_id: TenantId | None = None) -> AllocationResult | None:
        """``n`` free slots for ``tenant_id``, or None (nothing taken) when fewer are free."""
        if n > len(self._free):
            return None
        out = tuple(self._free.popleft() for _ in range(n))
        for b in out:
            self._owner[b] = tenant_id
        return AllocationResult(out, self.tier)

    def free(self, block_ids: Sequence[BlockId]) -> list[BlockId]:
        for b in block_ids:
            if not 0 <= b < self.num_blocks or b in self._free:
                raise ValueError(f"{self.tier} block {b} freed but not allocated")
            self._drop(b)
            self._owner.pop(b, None)
            self._free.append(b)
        return list(block_ids)

    def _drop(self, block_id: BlockId) -> None:
        """Forget the data of a block being freed."""

    def get_utilization(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def get_fragmentation(self) -> float:
        return fragmentation(self._free)

    def block_info(self, block_id: BlockId) -> KVBlockInfo:
        return KVBlockInfo(
            block_id,
            self.tier,
            self.block_bytes,
            self._owner.get(block_id),
            self._last_access[block_id],
            0 if block_id in self._free else 1,
        )
