"""PrefixMatcher: the guard that makes a hash collision harmless."""

from __future__ import annotations

from collections.abc import Sequence


class PrefixMatcher:
    """Compares what an index node stores with what a lookup asks for.

    A node matches only when its token ids and salt equal the query block's, so two blocks whose
    chained hashes collide never share KV. ``verify`` is O(block size).
    """

    def verify(
        self,
        stored_token_ids: Sequence[int],
        query_token_ids: Sequence[int],
        stored_salt: str | None = None,
        query_salt: str | None = None,
    ) -> bool:
        """True when the stored block holds exactly the queried tokens under the same salt."""
        return stored_salt == query_salt and tuple(stored_token_ids) == tuple(query_token_ids)
