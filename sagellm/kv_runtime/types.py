"""Value types of the KV runtime (frozen dataclasses).

A block is the unit everywhere: ``block_size_tokens`` tokens of K and V for every layer. Its
canonical tensor layout, used whenever a block leaves its tier, is
``[num_layers, 2 (K|V), num_kv_heads, block_size_tokens, head_dim]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagellm.core.types import BlockId, TenantId

TierName = Literal["device", "host", "disk"]
TIER_ORDER: tuple[TierName, ...] = ("device", "host", "disk")  # fastest first


@dataclass(frozen=True)
class KVBlockInfo:
    """Where a block lives and who uses it. ``last_access`` is a logical counter of the tier
    (larger = more recent), not seconds; ``tenant_id`` is None for an unowned block."""

    block_id: BlockId
    tier: TierName
    size_bytes: int
    tenant_id: TenantId | None
    last_access: int
    ref_count: int = 0


@dataclass(frozen=True)
class AllocationResult:
    """Blocks handed out by one ``allocate`` call, all in ``tier``."""

    block_ids: tuple[BlockId, ...]
    tier: TierName


@dataclass(frozen=True)
class MigrationPlan:
    """Copy ``block_ids`` of ``src_tier`` into ``dst_tier``.

    ``dst_block_ids`` = None lets the migrator allocate destination blocks; otherwise they are
    the (already allocated) targets, one per source block. ``free_src`` frees the source
    blocks after the copy (a move); False keeps them (a copy).
    """

    src_tier: TierName
    dst_tier: TierName
    block_ids: tuple[BlockId, ...]
    dst_block_ids: tuple[BlockId, ...] | None = None
    free_src: bool = True


@dataclass(frozen=True)
class MigrationResult:
    """What one migration did. ``dst_block_ids[i]`` is None when source block i could not be
    read (e.g. a disk file failed its checksum): that block is a miss, never wrong KV."""

    plan: MigrationPlan
    dst_block_ids: tuple[BlockId | None, ...]
    num_bytes: int
    latency_s: float

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        return self.num_bytes / self.latency_s if self.latency_s > 0 else None

    @property
    def num_failed(self) -> int:
        return sum(b is None for b in self.dst_block_ids)


@dataclass(frozen=True)
class TenantQuota:
    """Per-tenant block limits (None = unlimited). Invariant: soft <= hard when both set.

    Over ``soft_blocks`` a tenant may still allocate, but its cached blocks are reclaimed first
    and a soft violation is counted; ``hard_blocks`` is never exceeded."""

    hard_blocks: int | None = None
    soft_blocks: int | None = None

    def __post_init__(self) -> None:
        for name in ("hard_blocks", "soft_blocks"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or an integer >= 1, got {v!r}")
        if (
            self.hard_blocks is not None
            and self.soft_blocks is not None
            and self.soft_blocks > self.hard_blocks
        ):
            raise ValueError(
                f"soft_blocks ({self.soft_blocks}) must be <= hard_blocks ({self.hard_blocks})"
            )


@dataclass(frozen=True)
class DefragResult:
    """One compaction: ``mapping`` old -> new block id of every moved block."""

    mapping: dict[BlockId, BlockId]
    fragmentation_before: float
    fragmentation_after: float
    latency_s: float

    @property
    def num_moved_blocks(self) -> int:
        return len(self.mapping)
