"""kv_runtime: KVPool, BlockManager, HierarchyManager (device/host/disk tiers), KVMigrator,
QuotaManager, defragmentation. Filled by its own issue.
"""
