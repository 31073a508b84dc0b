"""Where blocks leaving a tier go: one tier down (device -> host -> disk) or nowhere (drop).

Policies register under the name ``EngineConfig.migration_policy`` uses:

- ``demote``: :class:`OneTierDownPolicy`, every block to the next lower tier present (the
  runtime makes room there, pushing that tier's own victims further down).
- ``cost_benefit``: :class:`TieredMigrationPolicy` over :class:`RooflineCostBenefitModel`,
  recompute versus transfer with measured rates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

from sagellm.core.registry import Registry
from sagellm.kv_policy.cost_benefit import RooflineCostBenefitModel
from sagellm.kv_policy.protocol import MigrationPolicy
from sagellm.kv_policy.types import (
    TIERS,
    BlockStats,
    MigrationDecision,
    MigrationStep,
    PolicyContext,
    Tier,
)


def p_reuse_from_history(
    access_times_s: Sequence[float], now_s: float, horizon_s: float, prior: float
) -> float:
    """P(reuse within ``horizon_s``) from a block's access times, assuming exponential gaps
    at the mean observed gap; ``prior`` when fewer than two accesses are known."""
    if len(access_times_s) < 2:
        return prior
    mean_gap_s = (access_times_s[-1] - access_times_s[0]) / (len(access_times_s) - 1)
    if mean_gap_s <= 0:
        return 1.0
    return 1.0 - math.exp(-horizon_s / mean_gap_s)


class OneTierDownPolicy:
    """Every block leaving a tier goes to the next lower tier present (a key of
    ``ctx.pool_stats.free_blocks_by_tier``), whatever its room: the runtime makes room there
    first. With no lower tier the block is dropped. Expected benefits are not known (0.0)."""

    needs_cost_model: ClassVar[bool] = False

    def plan(self, ctx: PolicyContext) -> MigrationDecision:
        present = ctx.pool_stats.free_blocks_by_tier
        steps = []
        for blk in ctx.blocks:
            lower = [t for t in TIERS[TIERS.index(blk.tier) + 1 :] if t in present]
            steps.append(MigrationStep(blk.block_id, blk.tier, lower[0] if lower else None, 0.0))
        return MigrationDecision(tuple(steps), 0.0)


class TieredMigrationPolicy:
    """For each block in ``ctx.blocks`` (the runtime lists the blocks that must leave their
    tier), pick the lower tier with the largest positive expected benefit
    (``CostBenefitModel.evaluate_migration``) that still has room
    (``ctx.pool_stats.free_blocks_by_tier``), else drop it. Blocks are taken in order of
    decreasing benefit so the scarce room goes to the most valuable ones.

    ``prior_p_reuse``: reuse probability of a block with fewer than two recorded accesses
    (``ctx.access_history``); an explicit knob, not a hidden constant.
    """

    needs_cost_model: ClassVar[bool] = True

    def __init__(
        self, cost_model: RooflineCostBenefitModel, horizon_s: float, prior_p_reuse: float = 0.0
    ) -> None:
        if horizon_s <= 0:
            raise ValueError(f"horizon_s must be > 0, got {horizon_s}")
        if not 0.0 <= prior_p_reuse <= 1.0:
            raise ValueError(f"prior_p_reuse must be in [0, 1], got {prior_p_reuse}")
        self.cost_model = cost_model
        self.horizon_s = horizon_s
        self.prior_p_reuse = prior_p_reuse

    def _options(self, blk: BlockStats, ctx: PolicyContext) -> list[tuple[float, Tier]]:
        p = p_reuse_from_history(
            ctx.access_history.get(blk.block_id, ()), ctx.now_s, self.horizon_s, self.prior_p_reuse
        )
        lower = TIERS[TIERS.index(blk.tier) + 1 :]
        opts = []
        for dst in lower:
            if dst in self.cost_model.bandwidth_bytes_per_s:
                est = self.cost_model.evaluate_migration(blk, dst, p)
                if est.expected_benefit_s > 0:
                    opts.append((est.expected_benefit_s, dst))
        opts.sort(reverse=True)
        return opts

    def plan(self, ctx: PolicyContext) -> MigrationDecision:
        room = dict(ctx.pool_stats.free_blocks_by_tier)
        scored = [(self._options(b, ctx), b) for b in ctx.blocks]
        scored.sort(key=lambda o: -(o[0][0][0] if o[0] else 0.0))
        steps: list[MigrationStep] = []
        for opts, blk in scored:
            for benefit_s, dst in opts:
                if room.get(dst, 0) > 0:
                    room[dst] -= 1
                    steps.append(MigrationStep(blk.block_id, blk.tier, dst, benefit_s))
                    break
            else:
                steps.append(MigrationStep(blk.block_id, blk.tier, None, 0.0))
        return MigrationDecision(tuple(steps), sum(s.expected_benefit_s for s in steps))


#: YAML name -> policy class (``EngineConfig.migration_policy``).
MIGRATION_POLICIES: Registry[Callable[..., MigrationPolicy]] = Registry("migration_policy")
MIGRATION_POLICIES.register("demote")(OneTierDownPolicy)
MIGRATION_POLICIES.register("cost_benefit")(TieredMigrationPolicy)


def needs_cost_model(name: str) -> bool:
    """Whether the policy registered under ``name`` weighs costs (unknown names raise)."""
    return bool(getattr(MIGRATION_POLICIES.get(name), "needs_cost_model", False))


def make_migration_policy(
    name: str, cost_model: RooflineCostBenefitModel | None = None, **kwargs: float
) -> MigrationPolicy:
    """Build the policy registered under ``name``; a cost-weighing one gets ``cost_model``
    and ``kwargs`` (``horizon_s``, ``prior_p_reuse``), the others nothing."""
    factory = MIGRATION_POLICIES.get(name)
    if not needs_cost_model(name):
        return factory()
    if cost_model is None:
        raise ValueError(f"migration policy {name!r} needs a cost model (measured rates)")
    return factory(cost_model, **kwargs)
