"""prefix_reuse: radix index over KV blocks keyed by chained block hashes (PrefixReuseIndex,
PrefixMatcher, PrefixReuseMetrics). Filled by its own issue.
"""
