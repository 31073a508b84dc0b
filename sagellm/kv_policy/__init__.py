"""kv_policy: EvictionPolicy (LRU/LFU/ARC/S3FIFO/SIEVE/cost-aware), MigrationPolicy,
CostBenefitModel, LifetimePredictor. Filled by its own issue.
"""
