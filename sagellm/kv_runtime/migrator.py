"""KVMigrator: real block copies between tiers, timed.

A migration reads the source blocks (a disk read verifies each checksum), writes the readable
ones into the destination and, for a move, frees the source. Host -> device copies are issued
non-blocking from pinned memory on CUDA and synchronised before the clock stops, so
``latency_s`` is the real transfer time. Per-direction totals give the bandwidth; observers
(callables appended to ``observers``) see every :class:`MigrationResult`, on the thread that
ran the migration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sagellm.kv_runtime.hierarchy import HierarchyManager
from sagellm.kv_runtime.pool import KVPool
from sagellm.kv_runtime.types import MigrationPlan, MigrationResult, TierName


@dataclass
class DirectionStats:
    """Totals of one ``src -> dst`` direction."""

    num_migrations: int = 0
    num_blocks: int = 0
    num_bytes: int = 0
    seconds: float = 0.0
    num_failed_blocks: int = 0

    @property
    def bandwidth_bytes_per_s(self) -> float | None:
        return self.num_bytes / self.seconds if self.seconds > 0 else None


class KVMigrator:
    """Executes :class:`MigrationPlan` s over a :class:`HierarchyManager`."""

    def __init__(self, hierarchy: HierarchyManager) -> None:
        self.hierarchy = hierarchy
        self.stats: dict[tuple[TierName, TierName], DirectionStats] = {}
        self.observers: list[Callable[[MigrationResult], None]] = []

    def migrate(self, plan: MigrationPlan) -> MigrationResult | None:
        """Run ``plan``; None when the destination has too few free blocks (nothing moved)."""
        if plan.src_tier == plan.dst_tier:
            raise ValueError(f"src_tier and dst_tier are both {plan.src_tier!r}")
        src = self.hierarchy.tier(plan.src_tier)
        dst = self.hierarchy.tier(plan.dst_tier)
        n = len(plan.block_ids)
        allocated = plan.dst_block_ids is None
        if allocated:
            got = dst.allocate(n)
            if got is None:
                return None
            dst_ids = got.block_ids
        else:
            dst_ids = plan.dst_block_ids
            if len(dst_ids) != n:
                raise ValueError(f"dst_block_ids has {len(dst_ids)} ids for {n} blocks")
        t0 = time.perf_counter()
        readable: tuple[bool, ...] = ()
        if n and isinstance(src, KVPool) and isinstance(dst, KVPool):
            dst.copy_from(src, plan.block_ids, dst_ids)  # memory to memory: no staging copy
            readable = (True,) * n
        elif n:
            data, readable = src.read_blocks(plan.block_ids)
            ok = [i for i in range(n) if readable[i]]
            if len(ok) < n and ok:
                data = data[torch.tensor(ok, device=data.device)]
            if ok:
                dst.write_blocks([dst_ids[i] for i in ok], data)
        ok = [i for i in range(n) if readable[i]]
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        latency = time.perf_counter() - t0
        bad = [dst_ids[i] for i in range(n) if not readable[i]]
        if allocated and bad:
            dst.free(bad)
        if plan.free_src and n:
            src.free(plan.block_ids)
        result = MigrationResult(
            plan,
            tuple(dst_ids[i] if readable[i] else None for i in range(n)),
            len(ok) * src.block_bytes,
            latency,
        )
        s = self.stats.setdefault((plan.src_tier, plan.dst_tier), DirectionStats())
        s.num_migrations += 1
        s.num_blocks += len(ok)
        s.num_bytes += result.num_bytes
        s.seconds += latency
        s.num_failed_blocks += n - len(ok)
        for observe in self.observers:
            observe(result)
        return result
