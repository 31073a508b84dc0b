"""BlockManager: per-sequence block tables.

A table is a list of block ids; position i holds tokens ``[i*B, (i+1)*B)`` of that sequence.
Tables are mutated in place so a holder of ``table(seq_id)`` (the engine's Sequence) always
sees the current ids, including after defragmentation rewrites them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from sagellm.core.types import BlockId


class BlockManager:
    """Maps sequence ids to block tables; owns no blocks itself (the pool does)."""

    def __init__(self) -> None:
        self._tables: dict[str, list[BlockId]] = {}

    def table(self, seq_id: str) -> list[BlockId]:
        """The (live) table of ``seq_id``, created empty on first use."""
        return self._tables.setdefault(seq_id, [])

    def append(self, seq_id: str, block_ids: Sequence[BlockId]) -> None:
        self.table(seq_id).extend(block_ids)

    def drop(self, seq_id: str) -> list[BlockId]:
        """Empty the table (in place) and forget it; returns the ids it held."""
        t = self._tables.pop(seq_id, None)
        if t is None:
            return []
        out = list(t)
        t.clear()
        return out

    def rewrite(self, mapping: Mapping[BlockId, BlockId]) -> int:
        """Replace old ids by new ones in every table; returns the number of slots changed."""
        changed = 0
        for t in self._tables.values():
            for i, b in enumerate(t):
                nb = mapping.get(b)
                if nb is not None:
                    t[i] = nb
                    changed += 1
        return changed

    def items(self) -> Iterator[tuple[str, list[BlockId]]]:
        return iter(self._tables.items())

    def __len__(self) -> int:
        return len(self._tables)
