"""Value types of the prefix index (frozen; safe to hand across threads).

Block layout the index works over (block size B tokens, here B = 4)::

    prompt   t0 t1 t2 t3 | t4 t5 t6 t7 | t8 t9
    blocks   [  entry 0  ] [  entry 1  ]  (partial: never indexed)
    hash     h0 = H(None, t0..t3, salt)
             h1 = H(h0,   t4..t7, salt)

Only full blocks are indexed; each entry's hash chains its parent's, so equal hashes mean
equal prefixes (up to collisions, which :class:`PrefixMatcher` rules out by comparing tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from sagellm.core.types import BlockId

TierName = Literal["device", "host", "disk"]


@dataclass(frozen=True)
class PrefixEntry:
    """One full KV block in the index.

    ``token_length`` counts the tokens of the whole prefix ending with this block (a multiple
    of the block size). ``kv_block_ids`` are the block's ids in ``tier`` (one id per block in
    the native engine). ``metadata`` is free-form and read-only (e.g. ``tenant_id``).
    """

    entry_id: int
    token_hash: int
    token_length: int
    kv_block_ids: tuple[BlockId, ...]
    metadata: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    tier: TierName = "device"
    parent_entry_id: int | None = None  # None for a first block


@dataclass(frozen=True)
class PrefixHit:
    """How much of a prompt is cached.

    ``matched_length`` (tokens) is a multiple of the block size and at most ``num_tokens - 1``
    (the last prompt token is always recomputed so its logits exist). ``remaining_tokens`` =
    ``num_tokens - matched_length``. ``confidence`` is the fraction of matched blocks verified:
    stored token ids compared equal, or (``PrefixReuseIndex.trust_hash_chain``) a trusted
    chained hash equal up to a last block whose tokens compared equal (1.0 with
    verification; 0.0 when nothing matched).
    """

    matched_length: int
    confidence: float
    remaining_tokens: int


@dataclass(frozen=True)
class PrefixLookup:
    """The result of :meth:`PrefixReuseIndex.lookup`: the hit and the matched entries in order
    (``entries[i]`` holds tokens ``[i*B, (i+1)*B)``)."""

    hit: PrefixHit
    entries: tuple[PrefixEntry, ...]

    @property
    def block_ids(self) -> tuple[BlockId, ...]:
        """The matched entries' block ids, flattened (meaningful per entry ``tier``)."""
        return tuple(b for e in self.entries for b in e.kv_block_ids)
