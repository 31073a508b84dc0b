"""What the runtime (kv_runtime, the engine, or the offline simulator) calls.

Event flow for one block lookup, the way the offline simulator and the engine drive a policy::

    cached?  yes -> on_access(b)
             no  -> on_miss(b); if the pool is full: select_victims(ctx, n) -> free the victims;
                    on_insert(b, prefix_tokens)
    a block freed for another reason (abort, invalidation) -> on_remove(b)
    a tracked block became evictable (refcount fell to 0, or it became a leaf) -> on_evictable(b)

The runtime owns residency and reference counts; the policy owns its ordering state (queues,
counters, ghosts) and never frees memory itself.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sagellm.core.types import BlockId
from sagellm.kv_policy.types import (
    BlockStats,
    EvictionDecision,
    MigrationDecision,
    MigrationEstimate,
    PolicyContext,
    Tier,
)


@runtime_checkable
class EvictionPolicy(Protocol):
    """Chooses which cached blocks to free.

    Invariants: ``len(policy)`` equals the number of blocks inserted and not yet removed or
    returned as victims; victims are tracked, evictable blocks.
    """

    name: str
    capacity_blocks: int

    def on_miss(self, block_id: BlockId) -> None:
        """``block_id`` was looked up and is not cached; eviction and insertion may follow."""

    def on_insert(self, block_id: BlockId, prefix_tokens: int | None = None) -> None:
        """``block_id`` is now cached. ``prefix_tokens``: tokens of the prefix it completes."""

    def on_access(self, block_id: BlockId) -> None:
        """A cached block was hit."""

    def on_remove(self, block_id: BlockId) -> None:
        """The runtime freed a tracked block for its own reasons (not a victim of this policy)."""

    def on_evictable(self, block_id: BlockId) -> None:
        """A tracked block may be a victim again; ``ctx.is_evictable`` stays the authority."""

    def select_victims(self, ctx: PolicyContext, num_blocks: int) -> EvictionDecision:
        """Pick up to ``num_blocks`` evictable victims and forget them, calling
        ``ctx.on_victim`` with each one as it is chosen (``on_evictable`` may be called from
        inside it)."""
        ...

    def __len__(self) -> int: ...


@runtime_checkable
class MigrationPolicy(Protocol):
    """Decides where blocks leaving the device go: host, disk, or nowhere (drop)."""

    def plan(self, ctx: PolicyContext) -> MigrationDecision: ...


@runtime_checkable
class CostBenefitModel(Protocol):
    """Compares recomputing a block against keeping it in a slower tier."""

    def evaluate_migration(
        self, block: BlockStats, dst: Tier | None, p_reuse: float
    ) -> MigrationEstimate: ...


@runtime_checkable
class LifetimePredictor(Protocol):
    """Predicts time (or accesses) until a block is reused, from its access history."""

    def observe(self, block_id: BlockId, group: int, now: float) -> None:
        """Record an access of ``block_id`` (member of prefix group ``group``) at ``now``."""

    def predict_ttl(self, block_id: BlockId, group: int) -> float | None:
        """Expected gap to the next access, in the unit of ``now``; None = no history yet."""
        ...
