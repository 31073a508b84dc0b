"""NativeKVManager: the native engine's KV blocks, prefix reuse, tiers and quotas in one place.

The scheduler asks it for blocks per sequence; it answers from the device :class:`KVPool`
and, when prefix caching is on, from the :class:`PrefixReuseIndex`::

    admit:   lookup(prompt) -> entries on device: share (ref + 1)
                            -> entries on host/disk: allocate device blocks, migrate back
             seq.num_computed_tokens = matched tokens (that prefill is skipped)
    step:    full blocks computed -> insert into the index (block becomes cacheable)
    release: ref - 1; an indexed block at ref 0 stays cached (KV kept) until evicted
    evict:   device victims (chosen by the configured kv_policy through ``PolicyTracker``)
             are demoted to host, host victims (index LRU order) to disk; the bottom tier's
             victims are dropped from the index (leaves only)

Invariants: a device block is in the index iff it is in ``_entry_of_block``; an indexed
block is never written (copy-on-write guards the first block a step writes); a sequence's
table is the live list ``seq.block_ids`` (rewritten in place by defragmentation).
"""

from __future__ import annotations

import concurrent.futures
import enum
from collections.abc import Mapping

import torch

from sagellm.core.config import EngineConfig
from sagellm.core.types import BlockId, TenantId
from sagellm.engines.native.kv_admission import PrefixAdmission
from sagellm.engines.native.kv_eviction import PolicyTracker
from sagellm.engines.native.kv_migration import MigrationDecider
from sagellm.engines.native.kv_tiering import TierEviction
from sagellm.engines.native.sequence import Sequence
from sagellm.kv_policy import make_eviction_policy
from sagellm.kv_runtime import (
    BlockManager,
    DefragResult,
    HierarchyManager,
    KVMigrator,
    KVPool,
    QuotaManager,
    TenantQuota,
    capacity_blocks,
    defragment,
)
from sagellm.prefix_reuse import PrefixReuseIndex


class AllocStatus(enum.Enum):
    OK = "ok"
    NO_BLOCKS = "no_blocks"  # pool exhausted: back-pressure or preemption
    OVER_QUOTA = "over_quota"  # the tenant's hard limit: only that tenant waits


class NativeKVManager(PrefixAdmission, TierEviction):
    """Block bookkeeping of one engine; see the module docstring for the life of a block."""

    def __init__(
        self,
        kv: torch.Tensor,
        block_size_tokens: int,
        enable_prefix_caching: bool = False,
        per_tenant_salt: bool = True,
        eviction_policy: str = "lru",
        host_blocks: int | None = None,
        disk_blocks: int | None = None,
        cache_dir: str | None = None,
        quotas: Mapping[TenantId, TenantQuota] | None = None,
        policy_kwargs: Mapping[str, object] | None = None,
        migration: MigrationDecider | None = None,
    ) -> None:
        if block_size_tokens <= 0:
            raise ValueError(f"block_size_tokens must be > 0, got {block_size_tokens}")
        self.block_size = block_size_tokens
        self.pool = KVPool(kv, block_dim=2)
        self.tables = BlockManager()
        self.quota = QuotaManager(quotas)
        # The index's own (LRU) priority orders host/disk victims; the device's come from
        # the configured kv_policy through the tracker.
        self.index = PrefixReuseIndex(block_size_tokens) if enable_prefix_caching else None
        self.tracker = PolicyTracker(
            make_eviction_policy(eviction_policy, self.pool.num_blocks, **(policy_kwargs or {}))
        )
        self.per_tenant_salt = per_tenant_salt
        block_shape = (*kv.shape[:2], *kv.shape[3:])
        self.hierarchy = HierarchyManager.build(
            self.pool, block_shape, kv.dtype, host_blocks, disk_blocks, cache_dir
        )
        self.migrator = KVMigrator(self.hierarchy)
        self._entry_of_block: dict[BlockId, int] = {}
        self._num_indexed: dict[str, int] = {}  # leading blocks of a seq already offered
        self._path_tail: dict[str, int] = {}  # entry id of a seq's last offered block
        self._charged: dict[str, int] = {}
        self._pinned: dict[int, int] = {}  # entry id -> pins (never evicted while pinned)
        self._load_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.kv_load_s = 0.0  # time spent loading blocks from lower tiers (engine resets)
        self.num_loaded_blocks = 0
        self.num_demoted_blocks = 0
        self.num_dropped_entries = 0
        self.num_load_failures = 0
        self.num_cow_copies = 0
        # every turn of a device entry to evictable is reported to the tracker (see
        # kv_eviction); False makes victim searches pass over unevictable entries each time
        self.evictable_hints = True
        self.migration = migration or MigrationDecider()  # default: always one tier down
        self.migration.bind(self.hierarchy, self.migrator, block_size_tokens)

    @classmethod
    def from_config(
        cls,
        kv: torch.Tensor,
        cfg: EngineConfig,
        policy_kwargs: Mapping[str, object] | None = None,
        migration: MigrationDecider | None = None,
    ) -> NativeKVManager:
        """Build from the engine config; ``policy_kwargs`` go to the eviction policy's
        constructor (the cost-aware policy's FLOP model and measured FLOP/s), ``migration``
        decides demote/drop between tiers (``MigrationDecider.from_config``)."""
        n_layers, _, _, kvh, bs, d = kv.shape
        block_bytes = n_layers * 2 * kvh * bs * d * kv.element_size()
        host = capacity_blocks(cfg.host_tier_blocks, cfg.host_tier_bytes, block_bytes, "host_tier")
        disk = capacity_blocks(cfg.disk_tier_blocks, cfg.disk_tier_bytes, block_bytes, "disk_tier")
        quotas = {
            t: TenantQuota(q.hard_blocks, q.soft_blocks) for t, q in cfg.tenant_quotas.items()
        }
        return cls(
            kv,
            cfg.block_size_tokens,
            cfg.enable_prefix_caching,
            cfg.prefix_cache_per_tenant,
            cfg.eviction_policy,
            host,
            disk,
            cfg.kv_cache_dir,
            quotas,
            policy_kwargs,
            migration,
        )

    # ------------------------------------------------------------------ counts (scheduler)

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_available_blocks(self) -> int:
        """Blocks an allocation can get: free ones plus evictable cached ones (the pool's
        ``num_free_blocks`` counts only the first)."""
        return self.pool.num_free_blocks + self.pool.num_cached_blocks

    @property
    def num_referenced_blocks(self) -> int:
        """Blocks some sequence holds (0 when every request has finished)."""
        return self.pool.num_referenced_blocks

    def _salt(self, seq: Sequence) -> str | None:
        return seq.request.tenant_id if self.per_tenant_salt else None

    def _bind(self, seq: Sequence) -> list[BlockId]:
        table = self.tables.table(seq.request_id)
        if seq.block_ids is not table:
            table.extend(seq.block_ids)
            seq.block_ids = table
        return table

    def _charge(self, seq: Sequence, n: int) -> None:
        self.quota.charge(seq.request.tenant_id, n)
        self._charged[seq.request_id] = self._charged.get(seq.request_id, 0) + n

    # ------------------------------------------------------------------ allocate / free

    def allocate(self, seq: Sequence, n: int) -> AllocStatus:
        """Append ``n`` fresh blocks to ``seq``'s table (evicting cached blocks if needed)."""
        if n == 0:
            return AllocStatus.OK
        tenant = seq.request.tenant_id
        if not self.quota.can_charge(tenant, n):
            self.quota.charge(tenant, n)  # refused: counted as a hard violation
            return AllocStatus.OVER_QUOTA
        ids = self._take(n, tenant)
        if ids is None:
            return AllocStatus.NO_BLOCKS
        self._charge(seq, n)
        self._bind(seq).extend(ids)
        return AllocStatus.OK

    def free(self, seq: Sequence) -> None:
        """Drop ``seq``'s references (finish, abort, preemption); indexed blocks stay cached."""
        ids = [b for b in self.tables.drop(seq.request_id) if b is not None]
        seq.block_ids.clear()
        if ids:
            self._unref(ids)
        self.quota.release(seq.request.tenant_id, self._charged.pop(seq.request_id, 0))
        self._num_indexed.pop(seq.request_id, None)
        self._path_tail.pop(seq.request_id, None)

    def drop_blocks(self, seq: Sequence, logical_blocks: range) -> int:
        """Give back blocks of ``seq`` no later query reads (sparse attention): each table slot
        becomes ``None``, the tenant's charge shrinks. Returns the blocks freed."""
        table = seq.block_ids
        ids = []
        for j in logical_blocks:
            b = table[j]
            if b is not None:
                ids.append(b)
                table[j] = None
        if ids:
            self._unref(ids)
            self.quota.release(seq.request.tenant_id, len(ids))
            self._charged[seq.request_id] -= len(ids)
        return len(ids)

    def truncate(self, seq: Sequence, num_blocks: int) -> None:
        """Drop ``seq``'s blocks past its first ``num_blocks`` (speculative rollback: they hold
        only rejected drafts' KV, never indexed) and give back their quota charge."""
        extra = seq.block_ids[num_blocks:]
        if not extra:
            return
        del seq.block_ids[num_blocks:]  # the live table (see _bind)
        self._unref(extra)
        self.quota.release(seq.request.tenant_id, len(extra))
        self._charged[seq.request_id] = self._charged.get(seq.request_id, 0) - len(extra)

    def _unref(self, ids: list[BlockId]) -> None:
        for b in self.pool.free(ids):
            entry_id = self._entry_of_block.get(b)
            if entry_id is not None:
                self.tracker.evictable(entry_id)

    def _take(self, n: int, tenant: TenantId | None) -> tuple[BlockId, ...] | None:
        short = n - self.pool.num_free_blocks
        if short > 0:
            if self.index is None or short > self.pool.num_cached_blocks:
                return None
            self._evict_device(short)
        got = self.pool.allocate(n, tenant)
        return None if got is None else got.block_ids

    def ensure_writable(self, seq: Sequence) -> bool:
        """Copy-on-write the block this step writes first if it is shared or indexed.
        False when no block is left for the copy."""
        i = seq.num_computed_tokens // self.block_size
        if i >= len(seq.block_ids):
            return True
        b = seq.block_ids[i]
        if self.pool.ref_count(b) == 1 and b not in self._entry_of_block:
            return True
        new = self.pool.copy_on_write(b, seq.request.tenant_id)
        if new is None:
            return False
        self.num_cow_copies += new != b
        seq.block_ids[i] = new
        entry_id = self._entry_of_block.get(b)
        if new != b and entry_id is not None and self.pool.is_cached(b):
            self.tracker.evictable(entry_id)  # our reference was the last one
        return True

    # ------------------------------------------------------------------ defragmentation

    def defragment(self) -> DefragResult:
        """Compact the device pool; block tables, the index and our maps follow the moves."""

        def remap_entries(mapping: Mapping[BlockId, BlockId]) -> None:
            self._entry_of_block = {mapping.get(b, b): e for b, e in self._entry_of_block.items()}

        remaps = [self.tables.rewrite, remap_entries]
        if self.index is not None:
            remaps.append(self.index.remap_blocks)
        return defragment(self.pool, remaps)

    def stats(self) -> dict[str, float]:
        out = {
            "num_kv_blocks_cached": float(self.pool.num_cached_blocks),
            "kv_fragmentation": self.pool.get_fragmentation(),
            "num_loaded_blocks": float(self.num_loaded_blocks),
            "num_demoted_blocks": float(self.num_demoted_blocks),
            "num_dropped_entries": float(self.num_dropped_entries),
            "num_load_failures": float(self.num_load_failures),
            "num_cow_copies": float(self.num_cow_copies),
            "num_quota_violations": float(self.quota.num_violations),
            **self.migration.stats(),
        }
        for occ in self.hierarchy.occupancy():
            out[f"{occ.tier}_tier_blocks_used"] = float(occ.num_used_blocks)
        if self.index is not None:
            snap = self.index.metrics.snapshot()
            out["prefix_token_hit_rate"] = snap.token_hit_rate or 0.0
            out["prefix_request_hit_rate"] = snap.request_hit_rate or 0.0
            out["prefix_index_entries"] = float(len(self.index))
        return out

    def close(self) -> None:
        if self._load_pool is not None:
            self._load_pool.shutdown()
        self.hierarchy.close()
