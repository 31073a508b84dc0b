"""prefix_reuse: a radix index over full KV blocks keyed by chained block hashes.

``PrefixReuseIndex`` (insert / lookup / invalidate / evict_lru), ``PrefixMatcher`` (token
verification, so hash collisions never reuse wrong KV) and ``PrefixReuseMetrics``.
"""

from sagellm.prefix_reuse.hashing import BlockHashFn, blake2b_block_hash
from sagellm.prefix_reuse.index import PrefixReuseIndex
from sagellm.prefix_reuse.matcher import PrefixMatcher
from sagellm.prefix_reuse.metrics import PrefixReuseMetrics, PrefixReuseSnapshot
from sagellm.prefix_reuse.policy import AccessRecord, EvictionPriority, LRUPriority, make_priority
from sagellm.prefix_reuse.protocol import PrefixIndexProtocol
from sagellm.prefix_reuse.types import PrefixEntry, PrefixHit, PrefixLookup, TierName

__all__ = [
    "AccessRecord",
    "BlockHashFn",
    "EvictionPriority",
    "LRUPriority",
    "PrefixEntry",
    "PrefixHit",
    "PrefixIndexProtocol",
    "PrefixLookup",
    "PrefixMatcher",
    "PrefixReuseIndex",
    "PrefixReuseMetrics",
    "PrefixReuseSnapshot",
    "TierName",
    "blake2b_block_hash",
    "make_priority",
]
