"""Contracts of the kv_policy module: what a policy sees (``PolicyContext``) and what it decides
(``EvictionDecision``, ``MigrationDecision``). All frozen; times in seconds, sizes in bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sagellm.core.types import BlockId, TenantId

Tier = Literal["device", "host", "disk"]
TIERS: tuple[Tier, ...] = ("device", "host", "disk")  # fastest first; demotion goes rightwards


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Occupancy of the device block pool. Invariant: 0 <= num_used_blocks <= capacity_blocks."""

    capacity_blocks: int  # device blocks the pool holds
    num_used_blocks: int  # cached or in use
    block_size_bytes: int | None = None  # KV bytes of one block (all layers); None = unknown
    free_blocks_by_tier: Mapping[Tier, int] = field(default_factory=dict)  # lower tiers' room


@dataclass(frozen=True, slots=True)
class TenantStats:
    """One tenant's share of the pool."""

    num_used_blocks: int
    quota_blocks: int | None = None  # None = no quota


@dataclass(frozen=True, slots=True)
class BlockStats:
    """What a migration decision needs to know about one cached block."""

    block_id: BlockId
    tier: Tier  # where it lives now
    size_bytes: int
    prefix_tokens: int  # tokens of the prefix this block completes (its own tokens included)
    block_tokens: int  # tokens stored in this block
    num_accesses: int  # since it was inserted, the insertion included
    last_access_s: float | None  # None = never accessed after insertion
    # prefix lengths of the blocks below this one in a prefix tree (``block_tokens`` each):
    # dropping this block makes them unreachable, so their recompute counts toward a drop
    descendant_prefix_tokens: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What the runtime tells a policy when it asks for a decision.

    ``is_evictable`` says whether a block may be a victim (reference count 0, and a leaf of the
    prefix index where the runtime needs leaves first); ``None`` means every tracked block is.
    A policy never returns a block for which it is false.
    """

    pool_stats: PoolStats
    tenant_stats: Mapping[TenantId, TenantStats] = field(default_factory=dict)
    access_history: Mapping[BlockId, Sequence[float]] = field(default_factory=dict)  # times, s
    is_evictable: Callable[[BlockId], bool] | None = None
    # True when the runtime calls ``on_evictable`` for every block whose ``is_evictable``
    # turns from False to True (reference count fell to 0, unpinned, became a leaf) and the
    # predicate is the same rule at every call: a policy may then set a block it found
    # unevictable aside until that hint (or an access) instead of passing over it each search
    evictable_hints: bool = False
    # Called by the policy with each victim as soon as it is chosen (and forgotten), before it
    # looks for the next one. The runtime frees the victim there and reports, by
    # ``on_evictable``, every block that this made evictable (a parent that became a leaf), so
    # one ``select_victims(ctx, k)`` returns the victims of k calls asking for one each
    on_victim: Callable[[BlockId], None] | None = None
    now_s: float = 0.0  # runtime clock at the decision
    blocks: tuple[BlockStats, ...] = ()  # candidates for migration (MigrationPolicy.plan)


@dataclass(frozen=True, slots=True)
class EvictionDecision:
    """Victims chosen by ``EvictionPolicy.select_victims``.

    Invariants: victims are distinct, were tracked by the policy, were evictable, and number at
    most what was asked; fewer means the policy found no more evictable blocks (back-pressure).
    The policy has already forgotten them (ghost history aside).
    """

    victims: tuple[BlockId, ...]
    reason: str  # which rule fired, e.g. "lru tail", "s3fifo small queue"


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """Move one block from ``src`` to ``dst``; ``dst is None`` drops it (recompute on reuse)."""

    block_id: BlockId
    src: Tier
    dst: Tier | None
    expected_benefit_s: float  # expected recompute time saved minus transfer time, seconds


@dataclass(frozen=True, slots=True)
class MigrationDecision:
    """A migration plan; ``net_benefit_s`` sums its steps' expected benefits (seconds)."""

    plan: tuple[MigrationStep, ...]
    net_benefit_s: float


@dataclass(frozen=True, slots=True)
class MigrationEstimate:
    """``CostBenefitModel.evaluate_migration``'s answer for one block and one target tier."""

    recompute_s: float  # prefill time of the block's tokens at its position (+ descendants')
    store_s: float | None  # device -> dst copy time; None when dst is None (drop)
    load_s: float | None  # dst -> device copy time on reuse; None when dropped
    p_reuse: float  # probability of reuse within the horizon, in [0, 1]
    expected_benefit_s: float  # p_reuse * (recompute_s - load_s) - store_s; 0 for a drop
