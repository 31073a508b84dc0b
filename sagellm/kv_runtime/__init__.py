"""kv_runtime: KV block pooling, tiers, migration, quotas and defragmentation.

``KVPool`` (reference-counted blocks over a real tensor, copy-on-write), ``BlockManager``
(per-sequence block tables), ``HierarchyManager`` (device / host / disk tiers), ``KVMigrator``
(timed copies between tiers), ``QuotaManager`` (per-tenant limits, fair reclaim),
``defragment``, and the ``KVBackendProtocol`` with ``MockKVBackend`` for tests.
"""

from sagellm.kv_runtime.block_manager import BlockManager
from sagellm.kv_runtime.defrag import defragment, plan_compaction
from sagellm.kv_runtime.disk import DiskTier
from sagellm.kv_runtime.free_list import fragmentation, largest_free_run
from sagellm.kv_runtime.hierarchy import (
    HierarchyManager,
    TierOccupancy,
    capacity_blocks,
    make_host_tier,
)
from sagellm.kv_runtime.migrator import DirectionStats, KVMigrator
from sagellm.kv_runtime.mock import MockKVBackend
from sagellm.kv_runtime.pool import KVPool
from sagellm.kv_runtime.protocol import KVBackendProtocol
from sagellm.kv_runtime.quota import QuotaManager, TenantUsage
from sagellm.kv_runtime.types import (
    TIER_ORDER,
    AllocationResult,
    DefragResult,
    KVBlockInfo,
    MigrationPlan,
    MigrationResult,
    TenantQuota,
    TierName,
)

__all__ = [
    "TIER_ORDER",
    "AllocationResult",
    "BlockManager",
    "DefragResult",
    "DirectionStats",
    "DiskTier",
    "HierarchyManager",
    "KVBackendProtocol",
    "KVBlockInfo",
    "KVMigrator",
    "KVPool",
    "MigrationPlan",
    "MigrationResult",
    "MockKVBackend",
    "QuotaManager",
    "TenantQuota",
    "TenantUsage",
    "TierName",
    "TierOccupancy",
    "capacity_blocks",
    "defragment",
    "fragmentation",
    "largest_free_run",
    "make_host_tier",
    "plan_compaction",
]
