"""How often the cost-benefit model's demote-or-drop call matches hindsight on a trace."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

from sagellm.core.types import BlockId
from sagellm.kv_policy.base import make_eviction_policy
from sagellm.kv_policy.cost_benefit import RooflineCostBenefitModel
from sagellm.kv_policy.lifetime import EwmaLifetimePredictor
from sagellm.kv_policy.simulator import simulate
from sagellm.kv_policy.types import BlockStats, Tier


@dataclass(frozen=True)
class CostBenefitReport:
    """Each victim of the device cache is demoted to ``tier`` if the model expects a positive
    benefit, else dropped. Hindsight: it pays to demote iff the block is requested again
    within ``horizon_accesses`` lookups and ``recompute_s - load_s > store_s``.
    ``accuracy`` = share of decisions that match hindsight; the realised seconds saved
    (recompute avoided minus transfers) are given for the model and both fixed rules."""

    num_decisions: int
    accuracy: float
    num_demoted: int
    realised_saving_s_model: float
    realised_saving_s_always_demote: float
    realised_saving_s_never_demote: float  # 0 by definition; the reference point
    realised_saving_s_hindsight: float  # demote exactly the blocks where it paid off


def evaluate_cost_benefit(
    requests,
    capacity_blocks: int,
    cost_model: RooflineCostBenefitModel,
    block_size_bytes: int,
    horizon_accesses: int,
    tier: Tier = "host",
    policy: str = "lru",
    block_tokens: int = 512,
) -> CostBenefitReport:
    """Replay ``requests`` through ``policy`` and judge each victim's migration decision."""
    times: dict[BlockId, list[int]] = defaultdict(list)
    pos_of: dict[BlockId, int] = {}
    i = 0
    for r in requests:
        for pos, b in enumerate(r):
            i += 1
            times[b].append(i)
            pos_of.setdefault(b, pos)
    pred = EwmaLifetimePredictor()
    observed = [0]  # lookups fed to the predictor so far
    flat = [(b, pos) for r in requests for pos, b in enumerate(r)]
    n_dec = correct = demoted = 0
    saved_model = saved_always = saved_best = 0.0

    def judge(v: BlockId, at: int) -> None:
        nonlocal n_dec, correct, demoted, saved_model, saved_always, saved_best
        while observed[0] < at:  # catch the predictor up to the eviction time
            b, pos = flat[observed[0]]
            observed[0] += 1
            pred.observe(b, (pos + 1).bit_length(), float(observed[0]))
        pos = pos_of[v]
        g = (pos + 1).bit_length()
        blk = BlockStats(
            v, "device", block_size_bytes, (pos + 1) * block_tokens, block_tokens, 1, None
        )
        est = cost_model.evaluate_migration(blk, tier, pred.p_reuse(v, g, horizon_accesses))
        ts = times[v]
        k = bisect.bisect_right(ts, at)
        reused = k < len(ts) and ts[k] - at <= horizon_accesses
        gain = (est.recompute_s - est.load_s if reused else 0.0) - est.store_s
        demote = est.expected_benefit_s > 0
        n_dec += 1
        demoted += demote
        correct += demote == (gain > 0)
        saved_model += gain if demote else 0.0
        saved_always += gain
        saved_best += max(gain, 0.0)

    simulate(make_eviction_policy(policy, capacity_blocks), requests, on_evict=judge)
    return CostBenefitReport(
        n_dec,
        correct / n_dec if n_dec else 0.0,
        demoted,
        saved_model,
        saved_always,
        0.0,
        saved_best,
    )
