"""HierarchyManager: the device / host / disk tiers of one engine.

::

    device  the engine's KVPool (CUDA when present, else CPU)      fastest, smallest
    host    a KVPool over CPU memory (pinned when CUDA is present)
    disk    checksummed files under a cache directory               slowest, largest

Tiers are optional except the device. Capacities are given in blocks or in bytes (bytes are
rounded down to whole blocks). The manager only holds the stores and answers where-to
questions; moving data is :class:`KVMigrator`'s job, choosing victims the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sagellm.kv_runtime.disk import DiskTier
from sagellm.kv_runtime.pool import KVPool
from sagellm.kv_runtime.protocol import KVBackendProtocol
from sagellm.kv_runtime.types import TIER_ORDER, TierName


def capacity_blocks(
    blocks: int | None, num_bytes: int | None, block_bytes: int, field: str
) -> int | None:
    """Resolve a tier capacity given in blocks or bytes (not both) to blocks; None = no tier.

    Raises ValueError naming ``field`` when both are set or the bytes hold less than a block.
    """
    if blocks is not None and num_bytes is not None:
        raise ValueError(f"{field}: set {field}_blocks or {field}_bytes, not both")
    if blocks is not None:
        if blocks < 1:
            raise ValueError(f"{field}_blocks must be >= 1, got {blocks}")
        return blocks
    if num_bytes is not None:
        n = num_bytes // block_bytes
        if n < 1:
            raise ValueError(f"{field}_bytes ({num_bytes}) holds no block of {block_bytes} bytes")
        return n
    return None


def make_host_tier(num_blocks: int, block_shape: tuple[int, ...], dtype: torch.dtype) -> KVPool:
    """A host KVPool of ``num_blocks`` canonical blocks, pinned when CUDA is available."""
    pin = torch.cuda.is_available()
    t = torch.zeros((num_blocks, *block_shape), dtype=dtype, pin_memory=pin)
    return KVPool(t, block_dim=0, tier="host")


@dataclass(frozen=True)
class TierOccupancy:
    """Blocks used / capacity of one tier at one moment."""

    tier: TierName
    num_used_blocks: int
    num_blocks: int
    block_bytes: int


class HierarchyManager:
    """The tiers, fastest first. ``tier(name)`` raises ValueError listing the present ones."""

    def __init__(
        self,
        device: KVBackendProtocol,
        host: KVBackendProtocol | None = None,
        disk: KVBackendProtocol | None = None,
    ) -> None:
        self._tiers: dict[TierName, KVBackendProtocol] = {"device": device}
        if host is not None:
            self._tiers["host"] = host
        if disk is not None:
            self._tiers["disk"] = disk
        names = self.tier_names
        below: list[TierName | None] = [*names[1:], None]
        self._lower = dict(zip(names, below, strict=True))  # the next slower tier, or None

    @classmethod
    def build(
        cls,
        device: KVPool,
        block_shape: tuple[int, ...],
        dtype: torch.dtype,
        host_blocks: int | None = None,
        disk_blocks: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> HierarchyManager:
        """Device pool plus optional host and disk tiers of the given sizes."""
        host = make_host_tier(host_blocks, block_shape, dtype) if host_blocks else None
        disk = None
        if disk_blocks:
            if cache_dir is None:
                raise ValueError("kv_cache_dir must be set when the disk tier is enabled")
            disk = DiskTier(cache_dir, disk_blocks, block_shape, dtype)
        return cls(device, host, disk)

    @property
    def tier_names(self) -> list[TierName]:
        return [t for t in TIER_ORDER if t in self._tiers]

    def has(self, name: TierName) -> bool:
        return name in self._tiers

    def tier(self, name: TierName) -> KVBackendProtocol:
        try:
            return self._tiers[name]
        except KeyError:
            raise ValueError(f"tier {name!r} is not enabled; present: {self.tier_names}") from None

    def lower(self, name: TierName) -> TierName | None:
        """The next slower tier present below ``name`` (None at the bottom)."""
        try:
            return self._lower[name]
        except KeyError:
            raise ValueError(f"tier {name!r} is not enabled; present: {self.tier_names}") from None

    def occupancy(self) -> list[TierOccupancy]:
        return [
            TierOccupancy(n, t.num_used_blocks, t.num_blocks, t.block_bytes)
            for n, t in self._tiers.items()
        ]

    def close(self) -> None:
        """Release on-disk files of the disk tier (if any)."""
        disk = self._tiers.get("disk")
        if isinstance(disk, DiskTier):
            disk.close()
