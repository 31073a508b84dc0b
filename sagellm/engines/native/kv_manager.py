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

import enum
from collections.abc import Mapping

import torch

from sagellm.core.config import EngineConfig
from sagellm.core.types import BlockId, TenantId
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
    MigrationPlan,
    QuotaManager,
    TenantQuota,
    capacity_blocks,
    defragment,
)
from sagellm.prefix_reuse import PrefixEntry, PrefixReuseIndex


class AllocStatus(enum.Enum):
    OK = "ok"
    NO_BLOCKS = "no_blocks"  # pool exhausted: back-pressure or preemption
    OVER_QUOTA = "over_quota"  # the tenant's hard limit: only that tenant waits


class NativeKVManager(TierEviction):
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
        self._charged: dict[str, int] = {}
        self._pinned: set[int] = set()
        self.kv_load_s = 0.0  # time spent loading blocks from lower tiers (engine resets)
        self.num_loaded_blocks = 0
        self.num_demoted_blocks = 0
        self.num_dropped_entries = 0
        self.num_load_failures = 0
        self.num_cow_copies = 0
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
    def num_free(self) -> int:
        """Blocks an allocation can get: free ones plus evictable cached ones."""
        return self.pool.num_free_blocks + self.pool.num_cached_blocks

    @property
    def num_used(self) -> int:
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
        ids = self.tables.drop(seq.request_id)
        seq.block_ids.clear()
        if ids:
            self._unref(ids)
        self.quota.release(seq.request.tenant_id, self._charged.pop(seq.request_id, 0))
        self._num_indexed.pop(seq.request_id, None)

    def _unref(self, ids: list[BlockId]) -> None:
        for b in self.pool.free(ids):
            entry_id = self._entry_of_block.get(b)
            if entry_id is not None:
                self.tracker.evictable(entry_id)

    def _take(self, n: int, tenant: TenantId | None) -> tuple[BlockId, ...] | None:
        got = self.pool.allocate(n, tenant)
        if got is None:
            short = n - self.pool.num_free_blocks
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
        return True

    # ------------------------------------------------------------------ prefix reuse

    def match_prefix(self, seq: Sequence) -> int:
        """Reuse the longest cached prefix of ``seq`` (which holds no blocks): share device
        blocks, load host/disk ones back. Returns the reused tokens (``num_computed_tokens``)."""
        if self.index is None or seq.block_ids:
            return 0
        entries = list(self.index.lookup(seq.token_ids, self._salt(seq), False).entries)
        if not entries or not self.quota.can_charge(seq.request.tenant_id, len(entries)):
            return 0
        block_of: dict[int, BlockId] = {}
        dev = [e for e in entries if e.tier == "device"]
        self.pool.incref([e.kv_block_ids[0] for e in dev])
        block_of.update({e.entry_id: e.kv_block_ids[0] for e in dev})
        failed = self._load([e for e in entries if e.tier != "device"], entries, block_of, seq)
        keep = 0
        while keep < len(entries) and entries[keep].entry_id in block_of:
            keep += 1
        for e in failed:
            self._drop(e)
        extra = [block_of[e.entry_id] for e in entries[keep:] if e.entry_id in block_of]
        if extra:
            self._unref(extra)
        hits = {e.entry_id for e in dev}
        for e in reversed(entries[:keep]):  # deepest first: ties in recency go deeper first
            if e.entry_id in hits:  # a load back was a device miss (admitted in _load)
                self.tracker.access(e.entry_id)
        self._bind(seq).extend(block_of[e.entry_id] for e in entries[:keep])
        self._charge(seq, keep)
        self._num_indexed[seq.request_id] = keep
        seq.num_computed_tokens = keep * self.block_size
        return seq.num_computed_tokens

    def _load(
        self,
        loads: list[PrefixEntry],
        entries: list[PrefixEntry],
        block_of: dict[int, BlockId],
        seq: Sequence,
    ) -> list[PrefixEntry]:
        """Bring host/disk entries back to device blocks; returns those that failed to read."""
        if not loads:
            return []
        self._pinned = {e.entry_id for e in entries}
        try:
            ids = self._take(len(loads), seq.request.tenant_id)
            if ids is None:
                return []
            failed: list[PrefixEntry] = []
            targets = dict(zip((e.entry_id for e in loads), ids, strict=True))
            for tier in ("host", "disk"):
                group = [e for e in loads if e.tier == tier]
                if not group:
                    continue
                dst = tuple(targets[e.entry_id] for e in group)
                res = self.migrator.migrate(
                    MigrationPlan(tier, "device", tuple(e.kv_block_ids[0] for e in group), dst)
                )
                self.kv_load_s += res.latency_s
                for e, d, t in zip(group, res.dst_block_ids, dst, strict=True):
                    if d is None:
                        self.pool.free([t])
                        self.index.relocate(e.entry_id, (), tier)  # its slot is freed
                        failed.append(e)
                        self.num_load_failures += 1
                        continue
                    self.index.relocate(e.entry_id, (d,), "device")
                    self._entry_of_block[d] = e.entry_id
                    self.tracker.admit(self.index.get(e.entry_id))
                    self.pool.set_cacheable(d, True)
                    block_of[e.entry_id] = d
                    self.num_loaded_blocks += 1
            return failed
        finally:
            self._pinned = set()

    def commit(self, seq: Sequence) -> None:
        """Offer ``seq``'s newly completed full blocks to the index (after a forward)."""
        if self.index is None:
            return
        n_full = seq.num_computed_tokens // self.block_size
        done = self._num_indexed.get(seq.request_id, 0)
        if n_full <= done:
            return
        entries = self.index.insert(
            seq.token_ids[: n_full * self.block_size],
            seq.block_ids[:n_full],
            self._salt(seq),
            {"tenant_id": seq.request.tenant_id},
        )
        admitted = []
        for e, b in zip(entries[done:], seq.block_ids[done:n_full], strict=True):
            if e.tier != "device" and e.kv_block_ids:  # a stale lower-tier copy: promote ours
                self.hierarchy.tier(e.tier).free(e.kv_block_ids)
                self.index.relocate(e.entry_id, (b,), "device")
            elif e.tier != "device":
                self.index.relocate(e.entry_id, (b,), "device")
            elif e.kv_block_ids != (b,):
                continue  # another sequence's copy is indexed; ours stays private
            self._entry_of_block[b] = e.entry_id
            self.pool.set_cacheable(b, True)
            admitted.append(e.entry_id)
        for entry_id in reversed(admitted):  # deepest first: the deeper block is older
            self.tracker.admit(self.index.get(entry_id))
        self.migration.recomputed(admitted, self.index, seq.num_prompt_tokens - 1)
        self._num_indexed[seq.request_id] = n_full

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

    def record_admission(self, seq: Sequence, num_cached_tokens: int) -> None:
        """Count one first admission in the prefix metrics (prompt tokens only)."""
        if self.index is not None:
            cached = min(num_cached_tokens, seq.num_prompt_tokens)
            self.index.metrics.record_request(seq.num_prompt_tokens, cached)

    def close(self) -> None:
        self.hierarchy.close()
