"""QuotaManager: per-tenant block limits, violation counts and fair reclaim.

Usage is the number of blocks a tenant's live sequences hold (a shared block counts once per
holder, which is conservative). ``charge`` refuses to cross the hard limit (the caller keeps
the request waiting); crossing the soft limit is allowed but counted. ``reclaim_plan`` picks
whose cached blocks to evict: one block at a time from the tenant furthest above its soft
limit (or above an equal share of the pool when it has none) -- water-filling, ties by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sagellm.core.types import TenantId
from sagellm.kv_runtime.types import TenantQuota


@dataclass(frozen=True)
class TenantUsage:
    tenant_id: TenantId
    usage_blocks: int
    hard_blocks: int | None
    soft_blocks: int | None
    num_hard_violations: int  # refused charges
    num_soft_violations: int  # charges that crossed the soft limit


class QuotaManager:
    """Limits per tenant; tenants without an entry get ``default`` (unlimited by default)."""

    def __init__(
        self,
        quotas: Mapping[TenantId, TenantQuota] | None = None,
        default: TenantQuota | None = None,
    ) -> None:
        self.quotas = dict(quotas or {})
        self.default = default or TenantQuota()
        self._usage: dict[TenantId, int] = {}
        self._hard: dict[TenantId, int] = {}
        self._soft: dict[TenantId, int] = {}

    def quota(self, tenant_id: TenantId) -> TenantQuota:
        return self.quotas.get(tenant_id, self.default)

    def usage_blocks(self, tenant_id: TenantId) -> int:
        return self._usage.get(tenant_id, 0)

    def can_charge(self, tenant_id: TenantId, n: int) -> bool:
        hard = self.quotas.get(tenant_id, self.default).hard_blocks
        return hard is None or self._usage.get(tenant_id, 0) + n <= hard

    def rejection_reason(self, tenant_id: TenantId, need_blocks: int) -> str | None:
        """Why a request needing ``need_blocks`` can never run for this tenant (None = it can)."""
        hard = self.quota(tenant_id).hard_blocks
        if hard is not None and need_blocks > hard:
            return (
                f"tenant {tenant_id!r} needs {need_blocks} KV blocks but its hard quota "
                f"is {hard} blocks"
            )
        return None

    def charge(self, tenant_id: TenantId, n: int) -> bool:
        """Add ``n`` blocks to the tenant's usage; False (and a hard violation) when that would
        cross the hard limit."""
        q = self.quotas.get(tenant_id, self.default)
        before = self._usage.get(tenant_id, 0)
        if q.hard_blocks is not None and before + n > q.hard_blocks:
            self._hard[tenant_id] = self._hard.get(tenant_id, 0) + 1
            return False
        self._usage[tenant_id] = before + n
        soft = q.soft_blocks
        if soft is not None and before <= soft < before + n:
            self._soft[tenant_id] = self._soft.get(tenant_id, 0) + 1
        return True

    def release(self, tenant_id: TenantId, n: int) -> None:
        left = self.usage_blocks(tenant_id) - n
        if left < 0:
            raise ValueError(f"tenant {tenant_id!r} released {n} blocks but holds fewer")
        self._usage[tenant_id] = left

    def reclaim_plan(
        self, num_blocks: int, cached_blocks: Mapping[TenantId, int], pool_blocks: int
    ) -> dict[TenantId, int]:
        """How many cached blocks to evict from each tenant (sums to at most ``num_blocks``)."""
        left = dict(cached_blocks)
        share = pool_blocks / max(1, len(left))
        plan: dict[TenantId, int] = {}

        def over(t: TenantId) -> float:
            soft = self.quota(t).soft_blocks
            limit = soft if soft is not None else share
            return self.usage_blocks(t) + left[t] - limit

        for _ in range(num_blocks):
            cands = [t for t, c in left.items() if c > 0]
            if not cands:
                break
            t = max(sorted(cands), key=over)
            left[t] -= 1
            plan[t] = plan.get(t, 0) + 1
        return plan

    def snapshot(self) -> list[TenantUsage]:
        names = sorted(set(self._usage) | set(self.quotas) | set(self._hard))
        return [
            TenantUsage(
                t,
                self.usage_blocks(t),
                self.quota(t).hard_blocks,
                self.quota(t).soft_blocks,
                self._hard.get(t, 0),
                self._soft.get(t, 0),
            )
            for t in names
        ]

    @property
    def num_violations(self) -> int:
        return sum(self._hard.values()) + sum(self._soft.values())
