"""QuotaManager: hard refusals, soft violations, fair reclaim."""

import pytest

from sagellm.kv_runtime import QuotaManager, TenantQuota


def test_quota_validation_names_fields():
    with pytest.raises(ValueError, match="soft_blocks \\(5\\) must be <= hard_blocks \\(4\\)"):
        TenantQuota(hard_blocks=4, soft_blocks=5)
    with pytest.raises(ValueError, match="hard_blocks must be None or an integer >= 1"):
        TenantQuota(hard_blocks=0)


def test_hard_limit_refuses_and_counts():
    q = QuotaManager({"a": TenantQuota(hard_blocks=4, soft_blocks=2)})
    assert q.charge("a", 2)
    assert q.charge("a", 2)  # crosses soft (2 -> 4): one soft violation
    assert not q.charge("a", 1)  # would be 5 > 4
    assert q.charge("b", 100)  # unlimited tenant unaffected
    (a, b) = q.snapshot()
    assert (a.usage_blocks, a.num_hard_violations, a.num_soft_violations) == (4, 1, 1)
    assert b.usage_blocks == 100
    q.release("a", 3)
    assert q.usage_blocks("a") == 1 and q.can_charge("a", 3)
    assert q.rejection_reason("a", 5) == (
        "tenant 'a' needs 5 KV blocks but its hard quota is 4 blocks"
    )
    assert q.rejection_reason("b", 10**6) is None


def test_fair_reclaim_takes_from_heaviest_first():
    q = QuotaManager({"a": TenantQuota(soft_blocks=2), "b": TenantQuota(soft_blocks=8)})
    q.charge("a", 4)
    q.charge("b", 4)
    # a: 4 used + 4 cached vs soft 2 -> 6 over; b: 4 + 4 vs 8 -> 0 over
    plan = q.reclaim_plan(7, {"a": 4, "b": 4}, pool_blocks=32)
    assert plan == {"a": 4, "b": 3}
    assert q.reclaim_plan(3, {"a": 4, "b": 4}, pool_blocks=32) == {"a": 3}
