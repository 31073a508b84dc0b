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
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

from sagellm.core.config import EngineConfig
from sagellm.core.errors import PlanRejectedError
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


class PrefixPeek(NamedTuple):
    """A cache hit admission would take: tokens, of which on host/disk, and the hit's device
    blocks other sequences hold now (sharing them takes no free block)."""

    num_tokens: int
    num_lower_tier_tokens: int
    num_shared_blocks: int


class _Done:
    """A finished synchronous load, shaped like a future."""

    def __init__(self, value: list) -> None:
        self.value = value

    def result(self) -> list:
        return self.value


@dataclass
class PendingLoad:
    """A cached prefix being acquired for ``seq``: device hits already shared, host/disk
    blocks being read into ``targets`` (entry id -> device block) by ``future``. Times in
    seconds: ``load_s`` the reads took, ``wait_s`` the part of it the engine waited for
    (``load_s - wait_s`` ran hidden behind other work)."""

    seq: Sequence
    entries: list[PrefixEntry]
    targets: dict[int, BlockId]
    future: concurrent.futures.Future | _Done | None = None
    load_s: float = 0.0
    wait_s: float = 0.0


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
        ids = self.tables.drop(seq.request_id)
        seq.block_ids.clear()
        if ids:
            self._unref(ids)
        self.quota.release(seq.request.tenant_id, self._charged.pop(seq.request_id, 0))
        self._num_indexed.pop(seq.request_id, None)
        self._path_tail.pop(seq.request_id, None)

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

    def hashes(self, seq: Sequence, num_blocks: int) -> list[int]:
        """``seq``'s chained block hashes for its first ``num_blocks`` full blocks (cached on
        the sequence: a block is hashed once in its life)."""
        if len(seq.block_hashes) < num_blocks:
            seq.block_hashes = self.index.block_hashes(
                seq.token_ids, self._salt(seq), num_blocks, seq.block_hashes
            )
        return seq.block_hashes

    def _lookup(self, seq: Sequence, touch: bool) -> list[PrefixEntry]:
        max_blocks = max(0, (len(seq.token_ids) - 1) // self.block_size)
        hashes = self.hashes(seq, max_blocks)
        found = self.index.lookup(seq.token_ids, self._salt(seq), False, hashes, touch)
        return list(found.entries)

    def peek_prefix(self, seq: Sequence) -> PrefixPeek:
        """Read-only: what admitting ``seq`` now would reuse (longest verified match, tenant
        salt, capped at ``len - 1`` tokens; nothing when the tenant's quota cannot hold the
        hit). Changes no recency, count or metric."""
        if self.index is None or seq.block_ids:
            return PrefixPeek(0, 0, 0)
        entries = self._lookup(seq, touch=False)
        if not entries or not self.quota.can_charge(seq.request.tenant_id, len(entries)):
            return PrefixPeek(0, 0, 0)
        lower = sum(e.tier != "device" for e in entries)
        shared = sum(
            e.tier == "device" and self.pool.ref_count(e.kv_block_ids[0]) > 0 for e in entries
        )
        bs = self.block_size
        return PrefixPeek(len(entries) * bs, lower * bs, shared)

    def peek_tokens(self, token_ids: list[int], tenant_id: TenantId) -> int:
        """Read-only: cached prefix tokens of a prompt not (yet) in this engine (routing)."""
        if self.index is None:
            return 0
        salt = tenant_id if self.per_tenant_salt else None
        return self.index.lookup(token_ids, salt, False, None, False).hit.matched_length

    def pin(self, seqs: list[Sequence]) -> list[int]:
        """Protect the cached prefixes of ``seqs`` from eviction until :meth:`unpin` (a plan's
        admissions pin every planned hit first, so one request's allocation cannot evict the
        hit a later request of the same plan was promised)."""
        if self.index is None:
            return []
        ids = [e.entry_id for s in seqs if not s.block_ids for e in self._lookup(s, touch=False)]
        for i in ids:
            self._pinned[i] = self._pinned.get(i, 0) + 1
        return ids

    def unpin(self, entry_ids: list[int]) -> None:
        for i in entry_ids:
            left = self._pinned[i] - 1
            if left:
                self._pinned[i] = left
            else:
                del self._pinned[i]

    def acquire_prefix(self, seq: Sequence, num_tokens: int, overlap: bool = False) -> PendingLoad:
        """Admission's first half: reuse exactly ``num_tokens`` (whole blocks) of ``seq``'s
        cached prefix: share device blocks, load host/disk ones back into fresh device blocks,
        charge the tenant. ``overlap``: the tier reads run on a worker thread (the caller
        overlaps them with a forward) until :meth:`finish_load`; otherwise they are done here.

        Raises :class:`PlanRejectedError`, changing nothing, when the cache holds fewer
        tokens, the tenant's quota cannot hold them or no device block is left for a load.
        """
        bs = self.block_size
        k = num_tokens // bs
        if num_tokens % bs or seq.block_ids or self.index is None:
            why = "holds KV blocks" if seq.block_ids else "needs whole blocks and prefix caching"
            raise PlanRejectedError(
                f"request {seq.request_id!r}: cannot start at cached token {num_tokens} ({why})"
            )
        entries = self._lookup(seq, touch=True)[:k]
        if len(entries) < k:
            raise PlanRejectedError(
                f"request {seq.request_id!r}: plan reuses {num_tokens} cached tokens, "
                f"the cache holds {len(entries) * bs}"
            )
        if not self.quota.can_charge(seq.request.tenant_id, k):
            raise PlanRejectedError(
                f"request {seq.request_id!r}: tenant {seq.request.tenant_id!r} quota cannot "
                f"hold its {k} cached blocks"
            )
        dev = [e for e in entries if e.tier == "device"]
        loads = [e for e in entries if e.tier != "device"]
        pins = [e.entry_id for e in entries]
        for i in pins:
            self._pinned[i] = self._pinned.get(i, 0) + 1
        try:
            targets = self._take(len(loads), seq.request.tenant_id) if loads else ()
        finally:
            self.unpin(pins)
        if targets is None:
            raise PlanRejectedError(
                f"request {seq.request_id!r}: no device block to load {len(loads)} cached "
                "blocks back into"
            )
        self.pool.incref([e.kv_block_ids[0] for e in dev])
        for i in pins:  # held until the load finishes: nothing may evict the source copies
            self._pinned[i] = self._pinned.get(i, 0) + 1
        target_of = dict(zip((e.entry_id for e in loads), targets, strict=True))
        pending = PendingLoad(seq, entries, target_of)
        if loads:
            run = functools.partial(self._read_tiers, loads, pending.targets)
            pending.future = self._loader().submit(run) if overlap else _Done(run())
        return pending

    def match_prefix(self, seq: Sequence) -> int:
        """Acquire ``seq``'s whole cached prefix now (loads done synchronously); the reused
        tokens, 0 when there is none or it cannot be taken."""
        hit = self.peek_prefix(seq).num_tokens
        if hit == 0:
            return 0
        try:
            return self.finish_load(self.acquire_prefix(seq, hit))
        except PlanRejectedError:
            return 0

    def _loader(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._load_pool is None:
            self._load_pool = concurrent.futures.ThreadPoolExecutor(1, "sagellm-kv-load")
        return self._load_pool

    def _read_tiers(self, loads: list[PrefixEntry], targets: dict[int, BlockId]):
        """Copy host/disk blocks into their device targets (thread-safe: touches only tier
        storage and blocks nobody else references); returns ``([(tier group, result)],
        seconds the reads took)``."""
        t0 = time.perf_counter()
        out = []
        for tier in ("host", "disk"):
            group = [e for e in loads if e.tier == tier]
            if group:
                dst = tuple(targets[e.entry_id] for e in group)
                src = tuple(e.kv_block_ids[0] for e in group)
                out.append((group, self.migrator.migrate(MigrationPlan(tier, "device", src, dst))))
        return out, time.perf_counter() - t0

    def finish_load(self, pending: PendingLoad) -> int:
        """Admission's second half: wait for the tier reads, index the loaded blocks, bind the
        prefix to the sequence. Returns the reused tokens: ``num_tokens`` of the acquire, or
        fewer when a lower-tier read failed (the prefix is kept up to the first failure)."""
        seq, entries = pending.seq, pending.entries
        block_of = {e.entry_id: e.kv_block_ids[0] for e in entries if e.tier == "device"}
        if pending.future is not None:
            t0 = time.perf_counter()
            results, pending.load_s = pending.future.result()
            pending.wait_s = min(time.perf_counter() - t0, pending.load_s)
            for group, res in results:
                for e, d, t in zip(group, res.dst_block_ids, res.plan.dst_block_ids, strict=True):
                    if d is None:
                        self.pool.free([t])
                        self.index.relocate(e.entry_id, (), e.tier)  # its slot is freed
                        self.num_load_failures += 1
                        continue
                    self.index.relocate(e.entry_id, (d,), "device")
                    self._entry_of_block[d] = e.entry_id
                    self.tracker.admit(self.index.get(e.entry_id))
                    self.pool.set_cacheable(d, True)
                    block_of[e.entry_id] = d
                    self.num_loaded_blocks += 1
        self.unpin([e.entry_id for e in entries])
        keep = 0
        while keep < len(entries) and entries[keep].entry_id in block_of:
            keep += 1
        for e in entries[keep:]:
            if e.entry_id not in block_of:
                live = self.index.get(e.entry_id)
                if live is not None:
                    self._drop(live)
        extra = [block_of[e.entry_id] for e in entries[keep:] if e.entry_id in block_of]
        if extra:
            self._unref(extra)
        for e in reversed(entries[:keep]):  # deepest first: ties in recency go deeper first
            if e.tier == "device":  # a load back was a device miss (admitted above)
                self.tracker.access(e.entry_id)
        self._bind(seq).extend(block_of[e.entry_id] for e in entries[:keep])
        self._charge(seq, keep)
        self._num_indexed[seq.request_id] = keep
        if keep:
            self._path_tail[seq.request_id] = entries[keep - 1].entry_id
        seq.num_computed_tokens = keep * self.block_size
        return seq.num_computed_tokens

    def commit(self, seq: Sequence) -> None:
        """Offer ``seq``'s newly completed full blocks to the index (after a forward); only
        the new blocks are hashed and walked (below the last block offered)."""
        if self.index is None:
            return
        n_full = seq.num_computed_tokens // self.block_size
        done = self._num_indexed.get(seq.request_id, 0)
        if n_full <= done:
            return
        # continue below the last entry of this sequence's path (whoever's copy it holds);
        # walk from the root only when that entry has left the index since
        tail = self._path_tail.get(seq.request_id) if done else None
        skip = done if done and (tail is None or self.index.get(tail) is None) else 0
        entries = self.index.insert(
            seq.token_ids[: n_full * self.block_size],
            seq.block_ids[:n_full],
            self._salt(seq),
            {"tenant_id": seq.request.tenant_id},
            hashes=self.hashes(seq, n_full),
            parent_entry_id=None if skip else tail,
        )[skip:]
        self._path_tail[seq.request_id] = entries[-1].entry_id
        admitted = []
        for e, b in zip(entries, seq.block_ids[done:n_full], strict=True):
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

    def reset_prefix_cache(self) -> bool:
        """Forget every cached block (all tiers), as vLLM's ``reset_prefix_cache``; False,
        changing nothing, while a sequence still holds blocks."""
        if self.index is None:
            return True
        if self.pool.num_referenced_blocks:
            return False
        for e in self.index.entries():
            if e.parent_entry_id is None and self.index.get(e.entry_id) is not None:
                self._drop(e)
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

    def record_admission(self, seq: Sequence, num_cached_tokens: int) -> None:
        """Count one first admission in the prefix metrics (prompt tokens only)."""
        if self.index is not None:
            cached = min(num_cached_tokens, seq.num_prompt_tokens)
            self.index.metrics.record_request(seq.num_prompt_tokens, cached)

    def close(self) -> None:
        if self._load_pool is not None:
            self._load_pool.shutdown()
        self.hierarchy.close()
