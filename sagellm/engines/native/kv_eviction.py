"""PolicyTracker: drives a ``sagellm.kv_policy`` EvictionPolicy from the native engine's
device-resident prefix-index entries.

The KV manager keeps reference counts and the radix index; the policy keeps its own order.
The tracker translates between them::

    index entry on device (commit of a new full block, or load back from host/disk)
        -> on_miss(key); on_insert(key, prefix_tokens = entry.token_length)
    prefix hit on a device entry             -> on_access(key)
    ref count fell to 0, or became a leaf    -> on_evictable(key)
    entry left the device, not as a victim   -> on_remove(key)
    room needed                              -> select_victims(ctx, n), ctx.is_evictable
                                                = the manager's rule (ref 0, unpinned, tier
                                                device, leaf where entries leave the index);
                                                ctx.on_victim frees each victim at once and
                                                reports its parent (a leaf now) evictable,
                                                so k blocks take one policy call

A key is the entry's chained block hash (``token_hash``): it survives the entry being
dropped and recomputed later, so ghost lists (ARC, S3FIFO) recognise a returning prefix.
Two live entries with equal hashes (a collision the index tolerates) cannot share a key:
the later one gets ``-(entry_id + 1)`` (hashes are >= 0), losing only ghost history.

Invariant: ``len(policy) == len(tracker)`` == device entries of the index.

Without host/disk tiers and tenant quotas the manager's rule is one predicate and it reports
every transition to evictable (ref count 0 in ``_unref`` and after copy-on-write, unpin, a
child leaving the index), so victim searches run with ``evictable_hints``: a policy that uses
them (LRU) sets unevictable entries aside instead of passing over them at every search.
"""

from __future__ import annotations

from collections.abc import Callable

from sagellm.kv_policy import EvictionPolicy, PolicyContext, PoolStats
from sagellm.prefix_reuse import PrefixEntry


class PolicyTracker:
    """Maps index entry ids to policy keys and forwards the engine's block events."""

    def __init__(self, policy: EvictionPolicy) -> None:
        self.policy = policy
        self._key_of_entry: dict[int, int] = {}
        self._entry_of_key: dict[int, int] = {}
        self.num_victims = 0  # entries the policy chose, all calls together
        self.victims_reported_late = 0  # of the last select: victims not seen by on_victim
        # the current select's arguments, read by the two callbacks its context hands the
        # policy (bound once, so one context serves every call with the same pool stats and
        # hints: building one per call was ~1.6 us of a ~15 us one-block eviction)
        self._can_evict: Callable[[int], bool] = _never
        self._on_victim: Callable[[int], None] | None = None
        self._out: list[int] = []
        self._ctx: PolicyContext | None = None

    def __len__(self) -> int:
        return len(self._key_of_entry)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._key_of_entry

    def admit(self, entry: PrefixEntry) -> None:
        """``entry`` now lives on the device (a miss filled); no-op when already tracked."""
        if entry.entry_id in self._key_of_entry:
            return
        key = entry.token_hash
        if key in self._entry_of_key:
            key = -(entry.entry_id + 1)
        self._key_of_entry[entry.entry_id] = key
        self._entry_of_key[key] = entry.entry_id
        self.policy.on_miss(key)
        self.policy.on_insert(key, entry.token_length)

    def access(self, entry_id: int) -> None:
        """A prefix lookup hit ``entry_id`` on the device."""
        key = self._key_of_entry.get(entry_id)
        if key is not None:
            self.policy.on_access(key)

    def evictable(self, entry_id: int) -> None:
        """``entry_id`` may have become a victim candidate (ref 0, or now a leaf)."""
        key = self._key_of_entry.get(entry_id)
        if key is not None:
            self.policy.on_evictable(key)

    def forget(self, entry_id: int) -> None:
        """``entry_id`` left the device for another reason than being this policy's victim."""
        key = self._key_of_entry.pop(entry_id, None)
        if key is not None:
            del self._entry_of_key[key]
            self.policy.on_remove(key)

    def select(
        self,
        num_blocks: int,
        can_evict: Callable[[int], bool],
        pool_stats: PoolStats,
        hints: bool = False,
        on_victim: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Up to ``num_blocks`` entry ids chosen by the policy (one ``select_victims`` call)
        among those ``can_evict`` accepts; they are no longer tracked when returned.
        ``hints``: the caller calls :meth:`evictable` on every transition of ``can_evict`` to
        True and ``can_evict`` is the same rule at every call (``PolicyContext.evictable_hints``).
        ``on_victim(entry_id)``: runs as each victim is chosen, before the policy looks for the
        next (``PolicyContext.on_victim``); the caller may free the entry there and report the
        entries that turned evictable. ``victims_reported_late`` counts the victims of this call
        the policy did not announce that way (a policy without the hook): they are handed to
        ``on_victim`` after the call, so the caller may have to ask again for the rest."""
        saved = self._can_evict, self._on_victim, self._out  # a callback may select again
        self._can_evict, self._on_victim, self._out = can_evict, on_victim, []
        try:
            ctx = self._ctx
            same = ctx is not None and ctx.evictable_hints == hints
            if not (same and (ctx.pool_stats is pool_stats or ctx.pool_stats == pool_stats)):
                ctx = self._ctx = PolicyContext(
                    pool_stats,
                    is_evictable=self._is_evictable,
                    evictable_hints=hints,
                    on_victim=self._chosen,
                )
            victims = self.policy.select_victims(ctx, num_blocks).victims
            late = [k for k in victims if k in self._entry_of_key]  # _chosen untracked the rest
            for key in late:
                self._chosen(key)
            self.victims_reported_late = len(late)
            out = self._out
        finally:
            self._can_evict, self._on_victim, self._out = saved
        self.num_victims += len(out)
        return out

    def _is_evictable(self, key: int) -> bool:
        return self._can_evict(self._entry_of_key[key])

    def _chosen(self, key: int) -> None:
        """The policy chose ``key``: untrack it, record it for the current select, and run
        that select's ``on_victim``."""
        entry_id = self._entry_of_key.pop(key)
        del self._key_of_entry[entry_id]
        self._out.append(entry_id)
        if self._on_victim is not None:
            self._on_victim(entry_id)


def _never(entry_id: int) -> bool:
    return False
