"""kv_policy: which KV blocks to keep, evict, demote or drop.

- ``EvictionPolicy`` implementations registered by YAML name in ``EVICTION_POLICIES``:
  ``lru``, ``lfu``, ``arc``, ``s3fifo``, ``sieve``, ``cost_aware``; ``make_eviction_policy``.
- ``MigrationPolicy`` implementations registered by YAML name in ``MIGRATION_POLICIES``:
  ``demote`` (``OneTierDownPolicy``), ``cost_benefit`` (``TieredMigrationPolicy`` over
  ``RooflineCostBenefitModel``); ``make_migration_policy``.
- ``EwmaLifetimePredictor``: time/accesses to next reuse, per prefix group.
- Offline trace replay (``simulator.simulate`` over a ``traces.BlockTrace``), decision latency
  (``latency``), replay speed (``speed``); ``oracle`` drives libCacheSim (imported only there).
  The sweeps, the replay command and the online comparison that drive these are experiments
  (``sagellm.experiments.kv_policy_*``).
"""

from sagellm.kv_policy.arc import ARCPolicy
from sagellm.kv_policy.base import EVICTION_POLICIES, make_eviction_policy
from sagellm.kv_policy.cost_aware import CostAwarePolicy
from sagellm.kv_policy.cost_benefit import PrefillFlopModel, RooflineCostBenefitModel
from sagellm.kv_policy.lfu import LFUPolicy
from sagellm.kv_policy.lru import LRUPolicy
from sagellm.kv_policy.migration import (
    MIGRATION_POLICIES,
    OneTierDownPolicy,
    TieredMigrationPolicy,
    make_migration_policy,
    needs_cost_model,
)
from sagellm.kv_policy.protocol import (
    CostBenefitModel,
    EvictionPolicy,
    LifetimePredictor,
    MigrationPolicy,
)
from sagellm.kv_policy.s3fifo import S3FIFOPolicy
from sagellm.kv_policy.sieve import SievePolicy
from sagellm.kv_policy.simulator import ReplayResult, simulate
from sagellm.kv_policy.types import (
    TIERS,
    BlockStats,
    EvictionDecision,
    MigrationDecision,
    MigrationEstimate,
    MigrationStep,
    PolicyContext,
    PoolStats,
    TenantStats,
    Tier,
)

__all__ = [
    "EVICTION_POLICIES",
    "MIGRATION_POLICIES",
    "TIERS",
    "ARCPolicy",
    "BlockStats",
    "CostAwarePolicy",
    "CostBenefitModel",
    "EvictionDecision",
    "EvictionPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "LifetimePredictor",
    "MigrationDecision",
    "MigrationEstimate",
    "MigrationPolicy",
    "MigrationStep",
    "OneTierDownPolicy",
    "PolicyContext",
    "PoolStats",
    "PrefillFlopModel",
    "ReplayResult",
    "RooflineCostBenefitModel",
    "S3FIFOPolicy",
    "SievePolicy",
    "TenantStats",
    "Tier",
    "TieredMigrationPolicy",
    "make_eviction_policy",
    "make_migration_policy",
    "needs_cost_model",
    "simulate",
]
