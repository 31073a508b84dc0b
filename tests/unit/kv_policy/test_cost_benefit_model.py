"""Prefill FLOP arithmetic, the roofline cost-benefit model and the tiered migration plan."""

import math

import pytest

from sagellm.kv_policy import BlockStats, PolicyContext, PoolStats
from sagellm.kv_policy.cost_benefit import PrefillFlopModel, RooflineCostBenefitModel
from sagellm.kv_policy.migration import TieredMigrationPolicy, p_reuse_from_history

FM = PrefillFlopModel(num_params=1000, num_layers=2, attn_dim=8)


def test_flops_linear_plus_causal_attention():
    # 3 tokens from scratch: linear 2*1000*3; attention 4*2*8*(1+2+3)
    assert FM.flops(0, 3) == 6000 + 64 * 6
    # the block completing a 4-token prefix with 2-token blocks covers tokens 2 and 3
    assert FM.block_flops(4, 2) == 4000 + 64 * (3 + 4)
    assert FM.flops(0, 4) == FM.flops(0, 2) + FM.flops(2, 4)
    with pytest.raises(ValueError, match="flop_model.num_layers"):
        PrefillFlopModel(num_params=1, num_layers=0, attn_dim=1)


def _block(bid=7, tier="device", prefix_tokens=4):
    return BlockStats(bid, tier, 1000, prefix_tokens, 2, 1, None)


def test_evaluate_migration_numbers():
    m = RooflineCostBenefitModel(FM, flops_per_s=4448.0, bandwidth_bytes_per_s={"host": 1e4})
    est = m.evaluate_migration(_block(), "host", p_reuse=0.5)
    assert est.recompute_s == pytest.approx(1.0)  # 4448 FLOPs at 4448 FLOP/s
    assert est.store_s == est.load_s == pytest.approx(0.1)
    assert est.expected_benefit_s == pytest.approx(0.5 * (1.0 - 0.1) - 0.1)
    drop = m.evaluate_migration(_block(), None, p_reuse=0.5)
    assert drop.expected_benefit_s == 0.0 and drop.store_s is None
    with pytest.raises(ValueError, match="no bandwidth for tier 'disk'"):
        m.evaluate_migration(_block(), "disk", 0.5)
    with pytest.raises(ValueError, match="flops_per_s"):
        RooflineCostBenefitModel(FM, flops_per_s=0.0, bandwidth_bytes_per_s={})


def test_p_reuse_from_history():
    assert p_reuse_from_history([], 0.0, 10.0, prior=0.3) == 0.3
    assert p_reuse_from_history([0.0, 10.0], 10.0, 10.0, 0.0) == pytest.approx(1 - math.exp(-1))


def test_migration_plan_fills_room_by_benefit_then_drops():
    m = RooflineCostBenefitModel(
        FM, flops_per_s=4448.0, bandwidth_bytes_per_s={"host": 1e4, "disk": 4e3}
    )
    pol = TieredMigrationPolicy(m, horizon_s=10.0)
    blocks = (_block(1), _block(2, prefix_tokens=40), _block(3))
    history = {1: [0.0, 1.0], 2: [0.0, 1.0], 3: []}  # 3: never reused -> prior 0 -> drop
    ctx = PolicyContext(
        PoolStats(4, 4, 1000, {"host": 1, "disk": 5}), access_history=history, blocks=blocks
    )
    d = pol.plan(ctx)
    dst = {s.block_id: s.dst for s in d.plan}
    assert dst == {2: "host", 1: "disk", 3: None}  # block 2 (deeper, dearer) wins the host slot
    assert d.net_benefit_s == pytest.approx(sum(s.expected_benefit_s for s in d.plan))
    assert d.net_benefit_s > 0


def test_load_rate_and_descendants_enter_the_estimate():
    m = RooflineCostBenefitModel(
        FM,
        flops_per_s=4448.0,
        bandwidth_bytes_per_s={"host": 1e4},
        load_bandwidth_bytes_per_s={"host": 2e4},
    )
    est = m.evaluate_migration(_block(), "host", p_reuse=1.0)
    assert est.store_s == pytest.approx(0.1) and est.load_s == pytest.approx(0.05)
    # a drop loses the two blocks below too: prefixes 6 and 8 (2-token blocks)
    deep = BlockStats(7, "device", 1000, 4, 2, 1, None, descendant_prefix_tokens=(6, 8))
    want = (FM.block_flops(4, 2) + FM.block_flops(6, 2) + FM.block_flops(8, 2)) / 4448.0
    assert m.evaluate_migration(deep, None, 1.0).recompute_s == pytest.approx(want)
    with pytest.raises(ValueError, match=r"load_bandwidth_bytes_per_s\['host'\]"):
        RooflineCostBenefitModel(FM, 1.0, {"host": 1.0}, {"host": 0.0})
