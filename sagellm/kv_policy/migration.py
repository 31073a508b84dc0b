"""Where blocks leaving a tier go: one tier down (device -> host -> disk) or nowhere (drop)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from sagellm.kv_policy.cost_benefit import RooflineCostBenefitModel
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


class TieredMigrationPolicy:
    """For each block in ``ctx.blocks`` (the runtime lists the blocks that must leave their
    tier), pick the lower tier with the largest positive expected benefit
    (``CostBenefitModel.evaluate_migration``) that still has room
    (``ctx.pool_stats.free_blocks_by_tier``), else drop it. Blocks are taken in order of
    decreasing benefit so the scarce room goes to the most valuable ones.

    ``prior_p_reuse``: reuse probability of a block with fewer than two recorded accesses
    (``ctx.access_history``); an explicit knob, not a hidden constant.
    """

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
