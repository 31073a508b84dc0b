"""The migration-policy registry and the one-tier-down policy (the engine's default)."""

import pytest

from sagellm.kv_policy import (
    MIGRATION_POLICIES,
    BlockStats,
    OneTierDownPolicy,
    PolicyContext,
    PoolStats,
    PrefillFlopModel,
    RooflineCostBenefitModel,
    TieredMigrationPolicy,
    make_migration_policy,
    needs_cost_model,
)

FM = PrefillFlopModel(num_params=1000, num_layers=2, attn_dim=8)


def _ctx(tiers, *blocks):
    return PolicyContext(PoolStats(4, 4, 1000, tiers), blocks=blocks)


def test_one_tier_down_ignores_room_and_skips_missing_tiers():
    dev = BlockStats(1, "device", 1000, 4, 2, 1, None)
    host = BlockStats(2, "host", 1000, 4, 2, 1, None)
    d = OneTierDownPolicy().plan(_ctx({"host": 0, "disk": 0}, dev, host))
    assert [(s.block_id, s.src, s.dst) for s in d.plan] == [
        (1, "device", "host"),
        (2, "host", "disk"),
    ]
    only_disk = OneTierDownPolicy().plan(_ctx({"disk": 3}, dev)).plan
    assert only_disk[0].dst == "disk"
    assert OneTierDownPolicy().plan(_ctx({}, dev)).plan[0].dst is None


def test_registry_names_and_factory():
    assert MIGRATION_POLICIES.names() == ["cost_benefit", "demote"]
    assert not needs_cost_model("demote") and needs_cost_model("cost_benefit")
    assert isinstance(make_migration_policy("demote"), OneTierDownPolicy)
    m = RooflineCostBenefitModel(FM, 1.0, {"host": 1.0})
    pol = make_migration_policy("cost_benefit", m, horizon_s=5.0, prior_p_reuse=1.0)
    assert isinstance(pol, TieredMigrationPolicy) and pol.prior_p_reuse == 1.0
    with pytest.raises(
        ValueError, match="unknown migration_policy 'lru'; known: cost_benefit, demote"
    ):
        make_migration_policy("lru")
    with pytest.raises(ValueError, match="needs a cost model"):
        make_migration_policy("cost_benefit")
