"""Chained block hashes: ``H(parent_hash, block_token_ids, salt) -> int``.

The default is BLAKE2b-64 over the parent hash, the salt and the token ids as little-endian
int64: stable across processes (unlike Python's ``hash``). Any function with the same
signature can be passed to the index, e.g. a deliberately weak one in collision tests.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

BlockHashFn = Callable[[int | None, Sequence[int], str | None], int]


def blake2b_block_hash(parent: int | None, token_ids: Sequence[int], salt: str | None) -> int:
    """64-bit BLAKE2b of (parent hash, salt, token ids)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(b"\x00" if parent is None else b"\x01" + parent.to_bytes(8, "little"))
    if salt is not None:
        s = salt.encode()
        h.update(len(s).to_bytes(4, "little") + s)
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    return int.from_bytes(h.digest(), "little")
