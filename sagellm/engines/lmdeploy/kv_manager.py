"""sagellm's view of LMDeploy's paging layer (patch 0001 of third_party/patches/lmdeploy).

:class:`LmdeployKVManager` wraps a patched ``lmdeploy.pytorch.paging.scheduler.Scheduler``:
``block_info()`` reads the block pool, every eviction (a sequence freed for recompute, or cached
prefix blocks dropped by ``BlockTrie.evict``) is recorded as an :class:`EvictionEvent`, and
``migrate(plan)`` queues swap/copy maps for the next ``schedule``. Block ids: physical for
``kind == "seq"`` and in block tables, logical (the trie's ids) for ``kind == "prefix"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

EvictionKind = Literal["seq", "prefix"]


@dataclass(frozen=True)
class LmdeployBlockInfo:
    """A snapshot of LMDeploy's block pool (counts in blocks of ``block_size_tokens``)."""

    block_size_tokens: int
    num_gpu_blocks: int
    num_cpu_blocks: int
    num_free_gpu_blocks: int
    num_free_cpu_blocks: int
    num_cached_prefix_leaves: int
    block_tables: dict[int, tuple[int, ...]]  # seq id -> physical block ids

    @property
    def num_used_gpu_blocks(self) -> int:
        return self.num_gpu_blocks - self.num_free_gpu_blocks


@dataclass(frozen=True)
class EvictionEvent:
    """Blocks that left LMDeploy's pool in one eviction."""

    kind: EvictionKind
    seq_id: int | None  # the evicted sequence (kind "seq"), None for prefix blocks
    blocks: tuple[int, ...]


class LmdeployKVManager:
    """KV manager API over a patched LMDeploy ``Scheduler`` (needs patch 0001)."""

    def __init__(self, scheduler: Any) -> None:
        if not hasattr(scheduler, "register_eviction_callback"):
            raise TypeError(
                "this lmdeploy Scheduler has no sagellm KV manager API: import lmdeploy from the "
                "patched overlay (sagellm.engines.lmdeploy.activate_overlay)"
            )
        self._scheduler = scheduler
        self.evictions: list[EvictionEvent] = []
        scheduler.register_eviction_callback(self._on_evict)

    def _on_evict(self, kind: EvictionKind, seq_id: int | None, blocks: list[int]) -> None:
        self.evictions.append(EvictionEvent(kind, seq_id, tuple(blocks)))

    def block_info(self) -> LmdeployBlockInfo:
        raw = self._scheduler.get_block_info()
        return LmdeployBlockInfo(
            block_size_tokens=raw["block_size"],
            num_gpu_blocks=raw["num_gpu_blocks"],
            num_cpu_blocks=raw["num_cpu_blocks"],
            num_free_gpu_blocks=raw["num_free_gpu_blocks"],
            num_free_cpu_blocks=raw["num_free_cpu_blocks"],
            num_cached_prefix_leaves=raw["num_cached_prefix_leaves"],
            block_tables={k: tuple(v) for k, v in raw["block_tables"].items()},
        )

    def migrate(
        self,
        swap_in: dict[int, int] | None = None,
        swap_out: dict[int, int] | None = None,
        copy: dict[int, int] | None = None,
    ) -> None:
        """Queue block moves ({src: dst}); they ride on the next SchedulerOutput's maps."""
        plan = {"swap_in": swap_in or {}, "swap_out": swap_out or {}, "copy": copy or {}}
        self._scheduler.migrate_blocks(plan)

    def num_evicted_blocks(self, kind: EvictionKind) -> int:
        return sum(len(e.blocks) for e in self.evictions if e.kind == kind)
