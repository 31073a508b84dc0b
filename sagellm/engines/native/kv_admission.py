"""Prefix reuse for :class:`NativeKVManager` (a mixin, like ``TierEviction``): the read-only
peek a strategy's snapshot shows, admission's cache half (``acquire_prefix`` then
``finish_load``: verified match, shared device blocks, host/disk load-back on this thread or a
worker thread, quota charge), pins that keep a plan's promised hits from eviction, and
``commit``, which indexes a sequence's completed blocks hashing each block once.

It works on the manager's pool, index, hierarchy, migrator, quota, tracker, tables and maps.
"""

from __future__ import annotations

import concurrent.futures
import functools
import time
from dataclasses import dataclass
from typing import NamedTuple

from sagellm.core.errors import PlanRejectedError
from sagellm.core.types import BlockId, TenantId
from sagellm.engines.native.sequence import Sequence
from sagellm.kv_runtime import MigrationPlan
from sagellm.prefix_reuse import PrefixEntry


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


class PrefixAdmission:
    """Prefix-cache lookups, admission and indexing (see the module docstring)."""

    def hashes(self, seq: Sequence, num_blocks: int) -> list[int]:
        """``seq``'s chained block hashes for its first ``num_blocks`` full blocks (cached on
        the sequence: a block is hashed once in its life)."""
        if len(seq.block_hashes) < num_blocks:
            seq.block_hashes = self.index.block_hashes(
                seq.token_ids, self._salt(seq), num_blocks, seq.block_hashes
            )
        return seq.block_hashes

    def _lookup(self, seq: Sequence, touch: bool) -> list[PrefixEntry]:
        tokens = seq.token_ids
        if seq.score_from_tokens is not None:  # scored positions must be computed, not reused
            tokens = tokens[: seq.score_from_tokens + 1]
        max_blocks = max(0, (len(tokens) - 1) // self.block_size)
        hashes = self.hashes(seq, max_blocks)
        found = self.index.lookup(tokens, self._salt(seq), False, hashes, touch)
        return list(found.entries)

    def peek_prefix(self, seq: Sequence) -> PrefixPeek:
        """Read-only: what admitting ``seq`` now would reuse (longest verified match, tenant
        salt, capped at ``len - 1`` tokens, or at ``score_from_tokens`` for a scored prompt;
        nothing when the tenant's quota cannot hold the hit). Changes no recency, count or
        metric."""
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
        """Undo :meth:`pin`; an entry whose last pin goes may be a victim again."""
        for i in entry_ids:
            left = self._pinned[i] - 1
            if left:
                self._pinned[i] = left
            else:
                del self._pinned[i]
                self.tracker.evictable(i)

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

    def record_admission(self, seq: Sequence, num_cached_tokens: int) -> None:
        """Count one first admission in the prefix metrics (prompt tokens only)."""
        if self.index is not None:
            cached = min(num_cached_tokens, seq.num_prompt_tokens)
            self.index.metrics.record_request(seq.num_prompt_tokens, cached)
