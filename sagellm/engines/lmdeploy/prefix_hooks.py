"""Prefix reuse hooks on LMDeploy's ``BlockTrie`` (patch 0002) feeding ``sagellm.prefix_reuse``.

``BlockTrie.match`` (fetch) reports, per call, the tokens a sequence asked with and the tokens
it matched; those become one ``PrefixReuseMetrics.record_request`` and one lookup latency.
``BlockTrie.allocate`` (store) reports blocks inserted into the trie and blocks found cached
(the sequence's own copy freed). Counts are in tokens (fetch) and blocks (store).
"""

from __future__ import annotations

from typing import Any

from sagellm.prefix_reuse import PrefixReuseMetrics


class PrefixReuseBridge:
    """An object with the ``on_fetch`` / ``on_store`` methods patch 0002 calls."""

    def __init__(self, metrics: PrefixReuseMetrics | None = None) -> None:
        self.metrics = metrics or PrefixReuseMetrics()
        self.num_fetches = 0
        self.num_stored_blocks = 0
        self.num_dedup_blocks = 0  # blocks a store found already cached

    def on_fetch(
        self, seq_id: int, num_query_tokens: int, num_matched_tokens: int, latency_s: float
    ) -> None:
        self.num_fetches += 1
        self.metrics.record_lookup_latency(latency_s)
        self.metrics.record_request(num_query_tokens, num_matched_tokens)

    def on_store(self, seq_id: int, num_new_blocks: int, num_reused_blocks: int) -> None:
        self.num_stored_blocks += num_new_blocks
        self.num_dedup_blocks += num_reused_blocks

    def attach(self, block_trie: Any) -> PrefixReuseBridge:
        if not hasattr(block_trie, "add_prefix_hook"):
            raise TypeError("this lmdeploy BlockTrie has no sagellm prefix hooks (patch 0002)")
        block_trie.add_prefix_hook(self)
        return self
