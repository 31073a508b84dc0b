"""KVBackendProtocol: what every KV block store offers (device pool, host memory, disk, mock,
and later the lmdeploy / vllm block managers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from sagellm.core.types import BlockId, TenantId
from sagellm.kv_runtime.types import AllocationResult, KVBlockInfo, TierName


@runtime_checkable
class KVBackendProtocol(Protocol):
    """A fixed-capacity store of KV blocks.

    Invariant: ``num_free_blocks + num_used_blocks == num_blocks`` (a store may also hold
    reusable ref-0 blocks, counted as used until reclaimed). ``allocate`` returns None (back-
    pressure) instead of raising when too few blocks are free. Blocks cross stores in the
    canonical layout ``[n, layers, 2, kv_heads, block_size, head_dim]``: ``read_blocks``
    returns one such tensor plus a readable flag per block (False = a miss, e.g. a failed
    checksum; that row's content is undefined and must not be used).
    """

    tier: TierName
    num_blocks: int
    block_bytes: int

    @property
    def num_free_blocks(self) -> int: ...

    @property
    def num_used_blocks(self) -> int: ...

    def allocate(self, n: int, tenant_id: TenantId | None = None) -> AllocationResult | None: ...

    def free(self, block_ids: Sequence[BlockId]) -> list[BlockId]: ...

    def read_blocks(
        self, block_ids: Sequence[BlockId]
    ) -> tuple[torch.Tensor, tuple[bool, ...]]: ...

    def write_blocks(self, block_ids: Sequence[BlockId], data: torch.Tensor) -> None: ...

    def get_utilization(self) -> float: ...

    def get_fragmentation(self) -> float: ...

    def block_info(self, block_id: BlockId) -> KVBlockInfo: ...
