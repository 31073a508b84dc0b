"""MigrationDecider: where the native engine's KV blocks go when a tier must make room.

:class:`~sagellm.engines.native.kv_tiering.TierEviction` picks a tier's victims and asks
:meth:`MigrationDecider.decide` where each goes: a lower tier (demote) or nowhere (drop; its
prefix is recomputed on reuse). The answer comes from the ``kv_policy`` MigrationPolicy named
by ``EngineConfig.migration_policy``::

    demote        OneTierDownPolicy: always the next tier down (no cost model, no measuring)
    cost_benefit  TieredMigrationPolicy over RooflineCostBenefitModel with p_reuse = 1 (the
                  engine keeps no per-block access times): demote to the lower tier with room
                  and the largest recompute_s - store_s - load_s > 0, else drop. recompute_s
                  covers the block and the descendants that stay cached (a drop makes them
                  unreachable): victims are decided one at a time, deepest first

Calibration is measured on this engine, never a constant::

    flops_per_s   median flops / compute_s of the engine's last 64 steps with prefill tokens
                  (its StepMetrics; the median ignores the warm-up of the first forward);
                  until one has run, a matmul measured at start
    store / load  per lower tier: KVMigrator's running totals of real migrations into it
    bytes/s       (store) and from it to the device (load); until a direction has moved a
                  block, real block copies through the tiers at start (a private migrator,
                  so they stay out of the engine's statistics)

The decision log (:meth:`records`, bounded; :meth:`stats`, sums) holds one
:class:`MigrationRecord` per entry leaving a tier: each policy decision, and each forced drop
(bottom tier full, no room, subtree of a dropped parent, failed read), later completed::

    demoted block moved         measured_store_s = that migration's latency_s / its blocks
    demoted block loaded back   measured_load_s  = the load migration's latency_s / its blocks
    dropped block recomputed    missed = True when a later prompt covered it again (within
    inside a later prompt       the prompt's reusable prefix: a hit had it been kept);
                                measured_recompute_s = block_tokens x compute_s /
                                num_batched_tokens of the engine step whose forward completed
                                it again: that step's mean seconds per token, an estimate (the
                                batch shares one forward, and a block may span steps)
"""

from __future__ import annotations

import statistics
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sagellm.core.config import EngineConfig
from sagellm.core.types import BlockId, StepMetrics
from sagellm.engines.native.calibrate import measure_tier_bandwidth
from sagellm.kv_policy import (
    BlockStats,
    PolicyContext,
    PoolStats,
    PrefillFlopModel,
    RooflineCostBenefitModel,
    make_migration_policy,
    needs_cost_model,
)
from sagellm.kv_runtime import TIER_ORDER, HierarchyManager, KVMigrator, MigrationResult, TierName
from sagellm.prefix_reuse import PrefixEntry, PrefixReuseIndex

_TOTALS = (
    "num_demote_decisions",  # policy sent a block to a lower tier
    "num_drop_decisions",  # policy dropped a block
    "num_forced_drops",  # dropped without a policy choice (bottom tier, no room, subtree, ...)
    "demote_store_predicted_s",  # over demoted blocks whose move was measured
    "demote_store_measured_s",
    "num_loaded_back_blocks",  # demoted blocks loaded back to the device
    "load_back_predicted_s",
    "load_back_measured_s",
    "num_dropped_prefix_misses",  # dropped blocks whose prefix was recomputed later
    "miss_recompute_predicted_s",
    "miss_recompute_measured_s",  # over misses whose step has been measured
)


@dataclass(slots=True)
class MigrationRecord:
    """One entry of the prefix index leaving ``src_tier``; filled in as measurements arrive
    (mutable for that). Seconds throughout; None = unknown (no cost model, not happened)."""

    entry_id: int
    token_hash: int  # chained block hash: the same prefix (and tenant salt) has the same hash
    prefix_tokens: int  # tokens of the prefix this block completes
    src_tier: TierName
    decision: str  # "demote:host", "demote:disk" or "drop"
    reason: str  # the policy's name, or why a drop was forced ("bottom tier", "subtree", ...)
    predicted_recompute_s: float | None = None  # this block alone, at its position
    predicted_subtree_recompute_s: float | None = None  # with its descendants: a drop's loss
    predicted_store_s: float | None = None  # into the demote tier (drop: cheapest rejected)
    predicted_load_s: float | None = None  # back to the device from there
    measured_store_s: float | None = None
    measured_load_s: float | None = None
    missed: bool = False  # dropped, and its prefix was recomputed later
    measured_recompute_s: float | None = None

    @property
    def predicted_transfer_s(self) -> float | None:
        """Store plus load back: what a demotion costs if the block is reused."""
        if self.predicted_store_s is None or self.predicted_load_s is None:
            return None
        return self.predicted_store_s + self.predicted_load_s


class MigrationChoice(NamedTuple):
    """Where one victim goes (``dst`` None = drop) and the predictions behind it."""

    entry: PrefixEntry
    dst: TierName | None
    predicted_recompute_s: float | None  # with descendants (what the policy weighed)
    predicted_transfer_s: float | None  # store + load via ``dst`` (drop: cheapest lower tier)


class MigrationDecider:
    """Adapter from the engine's tiers to a named MigrationPolicy, with the decision log.

    ``policy``: a ``kv_policy.MIGRATION_POLICIES`` name. ``flop_model`` and
    ``measure_flops_per_s`` (called once, at :meth:`bind`) are required by cost-weighing
    policies; ``step_metrics`` returns the engine's live step list (running FLOP/s and the
    measured recompute of missed drops; None = no engine, start-up rates only).
    """

    def __init__(
        self,
        policy: str = "demote",
        flop_model: PrefillFlopModel | None = None,
        measure_flops_per_s: Callable[[], float] | None = None,
        step_metrics: Callable[[], Sequence[StepMetrics]] | None = None,
        max_records: int = 4096,
    ) -> None:
        self.policy_name = policy
        self.uses_cost_model = needs_cost_model(policy)  # unknown names list the known ones
        if self.uses_cost_model and (flop_model is None or measure_flops_per_s is None):
            raise ValueError(f"migration policy {policy!r} needs flop_model and measured FLOP/s")
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        self.flop_model = flop_model
        self._measure_flops = measure_flops_per_s
        self._steps = step_metrics
        self.log: deque[MigrationRecord] = deque(maxlen=max_records)
        self.totals = dict.fromkeys(_TOTALS, 0.0)
        self.hierarchy: HierarchyManager | None = None
        self.migrator: KVMigrator | None = None
        self.block_tokens = 1
        self._lock = threading.Lock()  # observe() runs on the migrating thread
        self._at: dict[tuple[TierName, BlockId], MigrationRecord] = {}  # demoted, by location
        self._pending_drop: dict[int, MigrationRecord] = {}  # entry id -> drop decision
        self._dropped: OrderedDict[int, MigrationRecord] = OrderedDict()  # by token hash
        self._misses: list[tuple[MigrationRecord, int]] = []  # (record, engine step index)
        self._start_flops_per_s: float | None = None
        self._start_bw: dict[tuple[TierName, TierName], float] = {}
        self._pinned_flops: float | None = None
        self._pinned_bw: dict[bool, Mapping[TierName, float]] = {}  # store? -> tier -> bytes/s
        self._cursor = 0  # engine steps folded in so far
        self._step_rates: deque[float] = deque(maxlen=64)  # FLOP/s of recent prefill steps

    @classmethod
    def from_config(
        cls,
        cfg: EngineConfig,
        flop_model: PrefillFlopModel,
        measure_flops_per_s: Callable[[], float],
        step_metrics: Callable[[], Sequence[StepMetrics]] | None = None,
    ) -> MigrationDecider:
        """The decider ``cfg.migration_policy`` names, calibrated by the given measurements."""
        return cls(cfg.migration_policy, flop_model, measure_flops_per_s, step_metrics)

    def bind(self, hierarchy: HierarchyManager, migrator: KVMigrator, block_tokens: int) -> None:
        """Attach to a KV manager's tiers: observe its migrations and, for a cost-weighing
        policy with lower tiers, take the start-up measurements."""
        if self.hierarchy is not None:
            raise ValueError("this MigrationDecider is already bound to a KV manager")
        self.hierarchy, self.migrator, self.block_tokens = hierarchy, migrator, block_tokens
        # weakly: a strong bound method would close a cycle (migrator -> decider -> hierarchy
        # -> device pool -> the KV tensor) that only a full GC frees, gigabytes a time
        method = weakref.WeakMethod(self.observe)

        def observe(res: MigrationResult) -> None:
            target = method()
            if target is not None:
                target(res)

        migrator.observers.append(observe)
        if self.uses_cost_model and len(hierarchy.tier_names) > 1:
            self._start_flops_per_s = self._measure_flops()  # type: ignore[misc]
            self._start_bw = measure_tier_bandwidth(hierarchy)

    def pin_rates(
        self,
        flops_per_s: float | None = None,
        store_bytes_per_s: Mapping[TierName, float] | None = None,
        load_bytes_per_s: Mapping[TierName, float] | None = None,
    ) -> None:
        """Test hook: the given rates replace the measured ones from now on (a tier missing
        from a given mapping has no rate: it is never a demote target)."""
        if flops_per_s is not None:
            self._pinned_flops = flops_per_s
        for store, rates in ((True, store_bytes_per_s), (False, load_bytes_per_s)):
            if rates is not None:
                self._pinned_bw[store] = dict(rates)

    # ------------------------------------------------------------------ rates

    def _running_bytes_per_s(self, tier: TierName, store: bool) -> float | None:
        rank = TIER_ORDER.index
        num_bytes, seconds = 0, 0.0
        for (a, b), s in list(self.migrator.stats.items()):
            if (b == tier and rank(a) < rank(b)) if store else (a == tier and b == "device"):
                num_bytes, seconds = num_bytes + s.num_bytes, seconds + s.seconds
        return num_bytes / seconds if num_bytes and seconds > 0 else None

    def _bytes_per_s(self, tier: TierName, store: bool) -> float | None:
        if store in self._pinned_bw:
            return self._pinned_bw[store].get(tier)
        start = self._start_bw.get(("device", tier) if store else (tier, "device"))
        return self._running_bytes_per_s(tier, store) or start

    def _flops_per_s(self) -> float | None:
        """Pinned, else the engine's prefill steps' FLOP/s, else the start-up matmul rate."""
        if self._pinned_flops is not None:
            return self._pinned_flops
        if self._step_rates:
            return statistics.median(self._step_rates)
        return self._start_flops_per_s

    def cost_model(self) -> RooflineCostBenefitModel | None:
        """The cost model at the current rates; None without a flop model or before bind.
        A lower tier whose rates are unknown is left out (never a demote target)."""
        with self._lock:
            self._sync_steps()
            return self._model()

    def _model(self) -> RooflineCostBenefitModel | None:
        flops = self._flops_per_s()
        if self.flop_model is None or self.hierarchy is None or not flops:
            return None
        store: dict[TierName, float] = {}
        load: dict[TierName, float] = {}
        for t in self.hierarchy.tier_names[1:]:
            s, ld = self._bytes_per_s(t, True), self._bytes_per_s(t, False)
            if s and ld:
                store[t], load[t] = s, ld
        return RooflineCostBenefitModel(self.flop_model, flops, store, load)  # type: ignore[arg-type]

    def _sync_steps(self) -> None:
        """Fold new engine steps into the running FLOP/s; measure pending misses."""
        steps = self._steps() if self._steps is not None else ()
        if len(steps) < self._cursor:  # the engine reset its metrics: those steps are gone
            self._cursor, self._misses = 0, []
        for s in steps[self._cursor :]:
            if s.num_prefill_tokens > 0 and s.compute_s > 0 and s.flops > 0:
                self._step_rates.append(s.flops / s.compute_s)
        self._cursor = len(steps)
        waiting = []
        for r, i in self._misses:
            if i >= len(steps):
                waiting.append((r, i))
                continue
            s = steps[i]
            r.measured_recompute_s = self.block_tokens * s.compute_s / max(s.num_batched_tokens, 1)
            self.totals["miss_recompute_measured_s"] += r.measured_recompute_s
        self._misses = waiting

    # ------------------------------------------------------------------ decisions

    def decide(
        self,
        entries: Sequence[PrefixEntry],
        src: TierName,
        room: Mapping[TierName, int],
        index: PrefixReuseIndex | None = None,
    ) -> list[MigrationChoice]:
        """Where each of ``entries`` (victims leaving ``src``, all with a block there) goes.
        ``room``: blocks each lower tier present can take (free or freeable); ``index``: for
        the descendants a drop loses. Logs one record per entry."""
        if not entries:
            return []
        with self._lock:
            self._sync_steps()
            model = self._model() if self.uses_cost_model else None
            below = _descendants(index, entries) if model is not None and index is not None else {}
            room = dict(room)
            lost: set[int] = set()  # entry ids decided "drop" in this call
            out: dict[int, MigrationChoice] = {}
            for e in sorted(entries, key=lambda x: -x.token_length):
                kept = tuple(p for i, p in below.get(e.entry_id, ()) if i not in lost)
                dst, r = self._decide_one(e, src, room, model, kept)
                if dst is None:
                    lost.add(e.entry_id)
                else:
                    room[dst] -= 1
                out[e.entry_id] = MigrationChoice(
                    e, dst, r.predicted_subtree_recompute_s, r.predicted_transfer_s
                )
            return [out[e.entry_id] for e in entries]

    def _decide_one(
        self,
        e: PrefixEntry,
        src: TierName,
        room: dict[TierName, int],
        model: RooflineCostBenefitModel | None,
        kept: tuple[int, ...],
    ) -> tuple[TierName | None, MigrationRecord]:
        """One victim through the policy (``kept``: prefix lengths of its cached descendants)."""
        device = self.hierarchy.tier("device")
        size = device.block_bytes
        blk = BlockStats(e.entry_id, src, size, e.token_length, self.block_tokens, 1, None, kept)
        pool = PoolStats(device.num_blocks, device.num_used_blocks, size, room)
        # horizon_s only matters with access history, which the engine does not keep
        policy = make_migration_policy(self.policy_name, model, horizon_s=1.0, prior_p_reuse=1.0)
        (step,) = policy.plan(PolicyContext(pool, blocks=(blk,))).plan
        return step.dst, self._decision_record(e, blk, step.dst, model, list(room))

    def _decision_record(
        self,
        e: PrefixEntry,
        blk: BlockStats,
        dst: TierName | None,
        model: RooflineCostBenefitModel | None,
        lower: list[TierName],
    ) -> MigrationRecord:
        decision = "drop" if dst is None else f"demote:{dst}"
        r = MigrationRecord(
            e.entry_id, e.token_hash, e.token_length, blk.tier, decision, self.policy_name
        )
        if model is not None:
            r.predicted_recompute_s = model.recompute_s(blk.prefix_tokens, blk.block_tokens)
            r.predicted_subtree_recompute_s = model.evaluate_migration(blk, None, 1.0).recompute_s
            options = (
                [dst] if dst is not None else [t for t in lower if t in model.bandwidth_bytes_per_s]
            )
            ests = [model.evaluate_migration(blk, t, 1.0) for t in options]
            if ests:
                best = min(ests, key=lambda x: x.store_s + x.load_s)
                r.predicted_store_s, r.predicted_load_s = best.store_s, best.load_s
        self.log.append(r)
        if dst is None:
            self.totals["num_drop_decisions"] += 1
            self._pending_drop[e.entry_id] = r
        else:
            self.totals["num_demote_decisions"] += 1
            self._at[(blk.tier, e.kv_block_ids[0])] = r
        return r

    def dropped(self, entry: PrefixEntry, reason: str) -> None:
        """``entry`` left the index (its storage is being freed): a decided drop, or a forced
        one for ``reason``. Its prefix is watched for a later recompute (a miss)."""
        with self._lock:
            r = self._pending_drop.pop(entry.entry_id, None)
            if r is None:
                r = MigrationRecord(
                    entry.entry_id, entry.token_hash, entry.token_length, entry.tier, "drop", reason
                )
                model = self._model() if self.uses_cost_model else None
                if model is not None:
                    r.predicted_recompute_s = model.recompute_s(
                        entry.token_length, self.block_tokens
                    )
                self.log.append(r)
                self.totals["num_forced_drops"] += 1
            if entry.kv_block_ids:
                key = (entry.tier, entry.kv_block_ids[0])
                if key in self._at and self._at[key].entry_id == entry.entry_id:
                    del self._at[key]
            self._dropped[entry.token_hash] = r
            self._dropped.move_to_end(entry.token_hash)
            while len(self._dropped) > (self.log.maxlen or 1):
                self._dropped.popitem(last=False)

    def recomputed(
        self, entry_ids: Sequence[int], index: PrefixReuseIndex, max_prefix_tokens: int
    ) -> None:
        """``entry_ids`` of ``index`` were just computed by a forward and indexed (the KV
        manager's commit) for a sequence that could have reused up to ``max_prefix_tokens``
        (its prompt less the last token). A dropped prefix among them within that bound is a
        miss, measured once the engine has recorded the step."""
        if not self._dropped:
            return
        with self._lock:
            self._sync_steps()
            step = self._cursor  # the step in progress is appended after its commits
            for i in entry_ids:
                e = index.get(i)
                r = self._dropped.pop(e.token_hash, None) if e is not None else None
                if r is None or e.token_length > max_prefix_tokens:
                    continue  # cached again, but no prompt asked for it: not a miss
                r.missed = True
                self.totals["num_dropped_prefix_misses"] += 1
                self.totals["miss_recompute_predicted_s"] += r.predicted_recompute_s or 0.0
                if self._steps is not None:
                    self._misses.append((r, step))

    def observe(self, res: MigrationResult) -> None:
        """Migrator observer: time per block of each demoted block's move and load back."""
        plan = res.plan
        if not plan.block_ids:
            return
        per_block_s = res.latency_s / len(plan.block_ids)
        load = plan.dst_tier == "device"
        with self._lock:
            for b, d in zip(plan.block_ids, res.dst_block_ids, strict=True):
                r = self._at.pop((plan.src_tier, b), None)
                if r is None or d is None:
                    continue
                kind = "load_back" if load else "demote_store"
                predicted = r.predicted_load_s if load else r.predicted_store_s
                self.totals[f"{kind}_predicted_s"] += predicted or 0.0
                self.totals[f"{kind}_measured_s"] += per_block_s
                if load:
                    r.measured_load_s = per_block_s
                    self.totals["num_loaded_back_blocks"] += 1
                else:
                    r.measured_store_s = per_block_s
                    self._at[(plan.dst_tier, d)] = r

    # ------------------------------------------------------------------ reading

    def records(self) -> list[MigrationRecord]:
        """The decision log, oldest first (the last ``max_records``)."""
        with self._lock:
            self._sync_steps()
            return list(self.log)

    def stats(self) -> dict[str, float]:
        """Sums over the log (see ``_TOTALS``) and, with a cost model, the current rates."""
        with self._lock:
            self._sync_steps()
            out = dict(self.totals)
            model = self._model() if self.uses_cost_model else None
        if model is not None:
            out["migration_flops_per_s"] = model.flops_per_s
            for t, bw in model.bandwidth_bytes_per_s.items():
                out[f"migration_{t}_store_bytes_per_s"] = bw
                out[f"migration_{t}_load_bytes_per_s"] = model.load_bandwidth_bytes_per_s[t]
        return out


def _descendants(
    index: PrefixReuseIndex, entries: Sequence[PrefixEntry]
) -> dict[int, list[tuple[int, int]]]:
    """``(entry id, prefix tokens)`` of each entry's descendants in ``index`` (all of them
    become unreachable when it is dropped)."""
    kids: dict[int, list[PrefixEntry]] = {}
    for x in index.entries():
        if x.parent_entry_id is not None:
            kids.setdefault(x.parent_entry_id, []).append(x)
    out: dict[int, list[tuple[int, int]]] = {}
    for e in entries:
        acc, stack = [], list(kids.get(e.entry_id, ()))
        while stack:
            x = stack.pop()
            acc.append((x.entry_id, x.token_length))
            stack.extend(kids.get(x.entry_id, ()))
        out[e.entry_id] = acc
    return out
