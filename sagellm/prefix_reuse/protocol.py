"""The contract an engine needs from a prefix index."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from sagellm.core.types import BlockId
from sagellm.prefix_reuse.types import PrefixEntry, PrefixLookup, TierName


@runtime_checkable
class PrefixIndexProtocol(Protocol):
    """Longest-prefix lookup over full KV blocks; see :class:`PrefixReuseIndex`."""

    block_size_tokens: int

    def lookup(
        self, token_ids: Sequence[int], salt: str | None = None, record_request: bool = True
    ) -> PrefixLookup: ...

    def insert(
        self,
        token_ids: Sequence[int],
        kv_block_ids: Sequence[BlockId],
        salt: str | None = None,
        metadata: Mapping[str, str | int] | None = None,
        tier: TierName = "device",
    ) -> list[PrefixEntry]: ...

    def invalidate(self, entry_id: int) -> list[PrefixEntry]: ...

    def evict_lru(
        self, num_blocks: int, can_evict: Callable[[PrefixEntry], bool] | None = None
    ) -> list[PrefixEntry]: ...
