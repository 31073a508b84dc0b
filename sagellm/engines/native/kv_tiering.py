"""Eviction across KV tiers for :class:`NativeKVManager` (a mixin: it works on the manager's
pool, index, hierarchy, migrator, quota, ``_entry_of_block`` and ``_pinned``).

Making room in a tier asks the :class:`MigrationDecider` (``EngineConfig.migration_policy``)
where each victim goes: a lower tier (demote; at most that tier's capacity at a time, so a
full tier first makes room by the same rule) or nowhere (drop: the entry and its subtree
leave the index). The default ``demote`` policy always moves one tier down (device -> host
-> disk). At the bottom (or with no lower tier) leaf entries leave the index in policy order.
Victims are never pinned (being loaded for the sequence at hand) and, on the device, never
referenced. Every decision and drop lands in the decider's log (``migration_log``).

Device victims come from the configured ``kv_policy`` (through :class:`PolicyTracker`) in one
policy call: when they leave the index, each leaves as it is chosen (``on_victim``) and its
parent, now maybe a leaf, is reported evictable before the next is chosen, so the victims
are those of k one-block calls. Host and disk victims follow the index's LRU priority.
"""

from __future__ import annotations

from sagellm.core.types import BlockId, TenantId
from sagellm.engines.native.kv_eviction import PolicyTracker
from sagellm.engines.native.kv_migration import MigrationDecider, MigrationRecord
from sagellm.kv_policy import PoolStats
from sagellm.kv_runtime import (
    HierarchyManager,
    KVMigrator,
    KVPool,
    MigrationPlan,
    QuotaManager,
    TierName,
)
from sagellm.prefix_reuse import PrefixEntry, PrefixReuseIndex


class TierEviction:
    """Victim choice, demotion and dropping of cached blocks."""

    pool: KVPool
    index: PrefixReuseIndex
    hierarchy: HierarchyManager
    migrator: KVMigrator
    quota: QuotaManager
    tracker: PolicyTracker
    migration: MigrationDecider
    _entry_of_block: dict[BlockId, int]
    _pinned: set[int]
    num_demoted_blocks: int
    num_dropped_entries: int
    evictable_hints: bool
    _pool_stats: PoolStats | None = None  # the last victim search's, reused while unchanged

    @property
    def migration_log(self) -> list[MigrationRecord]:
        """Every demote/drop decision and forced drop, with predicted and measured seconds
        (bounded; see :mod:`sagellm.engines.native.kv_migration`)."""
        return self.migration.records()

    def _evictable(self, tier: str, tenant: TenantId | None = None):
        def ok(e: PrefixEntry) -> bool:
            if e.tier != tier or e.entry_id in self._pinned or not e.kv_block_ids:
                return False
            if tenant is not None and str(e.metadata.get("tenant_id", "")) != tenant:
                return False
            return tier != "device" or self.pool.is_cached(e.kv_block_ids[0])

        return ok

    def _victims(self, tier: str, k: int, remove: bool) -> list[PrefixEntry]:
        """``k`` entries of ``tier`` in policy order: any position when they move down a tier,
        leaves only (``remove``) when they leave the index. Under quotas the device's victims
        are spread over tenants by :meth:`QuotaManager.reclaim_plan`."""
        if tier != "device":
            pick = self.index.evict_lru if remove else self.index.select_victims
            return pick(k, self._evictable(tier))
        pick = self._policy_victims
        if not self.quota.quotas:
            return pick(k, self._evictable(tier), remove)
        per_tenant: dict[TenantId, int] = {}
        for e in self.index.select_victims(len(self.index), self._evictable(tier)):
            t = str(e.metadata.get("tenant_id", ""))
            per_tenant[t] = per_tenant.get(t, 0) + 1
        plan = self.quota.reclaim_plan(k, per_tenant, self.pool.num_blocks)
        out: list[PrefixEntry] = []
        for t, n in plan.items():
            out += pick(n, self._evictable(tier, t), remove)
        return out

    def _policy_victims(self, k: int, ok, remove: bool) -> list[PrefixEntry]:
        """``k`` device entries chosen by the eviction policy among those ``ok`` accepts;
        with ``remove`` they are leaves and leave the index here (their parents may follow)."""
        index = self.index

        def can_evict(entry_id: int) -> bool:
            e = index.leaf(entry_id) if remove else index.get(entry_id)
            return e is not None and ok(e)

        stats, used = self._pool_stats, self.pool.num_used_blocks
        if stats is None or stats.num_used_blocks != used:  # a full pool: the same every time
            stats = self._pool_stats = PoolStats(self.pool.num_blocks, used)
        if not remove:
            return [index.get(i) for i in self.tracker.select(k, can_evict, stats)]
        # one rule (leaves, no tenant filter) whose every turn to True the manager reports
        hints = self.evictable_hints and not self.quota.quotas
        out: list[PrefixEntry] = []

        def leave(entry_id: int) -> None:  # a victim leaves the index; its parent may follow
            gone = index.invalidate(entry_id)  # [the entry]: a leaf has no subtree
            out.extend(gone)
            parent = gone[0].parent_entry_id
            if parent is not None:
                self.tracker.evictable(parent)

        while len(out) < k:  # once, unless the policy lacks ``on_victim`` (then per parent)
            picked = self.tracker.select(k - len(out), can_evict, stats, hints, leave)
            if not picked or not self.tracker.victims_reported_late:
                break
        return out

    def _evict_device(self, k: int) -> None:
        self._make_room("device", k)

    def _make_room(self, tier: str, k: int) -> None:
        """Free ``k`` blocks of ``tier``: the decider sends each victim to a lower tier or
        drops it; at the bottom leaf entries leave the index (forced drops)."""
        if self.hierarchy.lower(tier) is None:
            for r in self._victims(tier, k, remove=True):
                self.migration.dropped(r, "bottom tier")
                self._release(r)
            return
        victims = self._victims(tier, k, remove=False)
        choices = self.migration.decide(victims, tier, self._room(tier), self.index)
        for c in choices:  # drops first: they free room without needing any
            if c.dst is None:
                self._drop(c.entry, self.migration.policy_name)
        for dst in self.hierarchy.tier_names:
            group = self._live([c.entry for c in choices if c.dst == dst])
            if group:
                self._demote(group, tier, dst)

    def _room(self, tier: str) -> dict[TierName, int]:
        """Blocks each tier below ``tier`` can take: its capacity less the entries pinned in
        it (the others are free or can be made free by demoting or dropping them)."""
        names = self.hierarchy.tier_names
        pinned = [self.index.get(i) for i in self._pinned]
        return {
            t: self.hierarchy.tier(t).num_blocks
            - sum(e is not None and e.tier == t for e in pinned)
            for t in names[names.index(tier) + 1 :]
        }

    def _live(self, entries: list[PrefixEntry]) -> list[PrefixEntry]:
        # making room below may have dropped some of them (as part of a subtree)
        return [e for e in entries if self.index.get(e.entry_id) == e]

    def _demote(self, entries: list[PrefixEntry], src: str, dst: str) -> None:
        """Move ``entries`` one tier down, at most the lower tier's capacity at a time (so a
        full tier pushes its own victims further down first); what cannot fit is dropped."""
        store = self.hierarchy.tier(dst)
        for i in range(0, len(entries), store.num_blocks):
            chunk = self._live(entries[i : i + store.num_blocks])
            if store.num_free_blocks < len(chunk):
                self._make_room(dst, len(chunk) - store.num_free_blocks)
                chunk = self._live(chunk)
            fit = min(len(chunk), store.num_free_blocks)
            self._move(chunk[:fit], src, dst)
            for e in chunk[fit:]:
                self._drop(e, "no room")

    def _move(self, move: list[PrefixEntry], src: str, dst: str) -> None:
        if not move:
            return
        src_ids = tuple(e.kv_block_ids[0] for e in move)
        plan = MigrationPlan(src, dst, src_ids, free_src=src != "device")  # type: ignore[arg-type]
        res = self.migrator.migrate(plan)
        if src == "device":
            for b in src_ids:
                self.tracker.forget(self._entry_of_block.pop(b))
            self.pool.reclaim(src_ids)
        for e, d in zip(move, res.dst_block_ids, strict=True):
            self.index.relocate(e.entry_id, () if d is None else (d,), dst)  # type: ignore[arg-type]
            if d is None:
                self._drop(e, "store failed")
        self.num_demoted_blocks += len(move)

    def _drop(self, entry: PrefixEntry, reason: str = "load failed") -> None:
        """Remove an entry and its subtree from the index and free their storage; the log
        gets ``reason`` for the entry (unless it was a decided drop) and "subtree" below."""
        for r in self.index.invalidate(entry.entry_id):
            self.migration.dropped(r, reason if r.entry_id == entry.entry_id else "subtree")
            self._release(r)
        if entry.parent_entry_id is not None:  # it may be a leaf now
            self.tracker.evictable(entry.parent_entry_id)

    def _release(self, r: PrefixEntry) -> None:
        """Free the storage of an entry already removed from the index."""
        self.num_dropped_entries += 1
        if not r.kv_block_ids:
            return
        if r.tier == "device":
            b = r.kv_block_ids[0]
            self._entry_of_block.pop(b, None)
            self.tracker.forget(r.entry_id)
            self.pool.set_cacheable(b, False)
        else:
            self.hierarchy.tier(r.tier).free(r.kv_block_ids)
