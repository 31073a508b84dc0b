"""Eviction priority of index entries: the small interface later policies plug into.

A policy maps an entry's access record to a sort key; the index evicts the smallest key
first. Ties go to the deeper entry (longer prefix) so a chain is evicted leaf first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AccessRecord:
    """What a policy may look at: logical access time (a counter, not seconds), hit count,
    and the prefix length in tokens."""

    last_access: int
    num_hits: int
    token_length: int


class EvictionPriority(Protocol):
    """Smaller priority = evicted first."""

    name: str

    def priority(self, record: AccessRecord) -> float: ...


class LRUPriority:
    """Least recently used: the oldest logical access goes first."""

    name = "lru"

    def priority(self, record: AccessRecord) -> float:
        return float(record.last_access)


POLICIES: dict[str, type] = {"lru": LRUPriority}


def make_priority(name: str) -> EvictionPriority:
    """The policy registered under ``name``; unknown names list the known ones."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(
            f"eviction_policy must be one of {sorted(POLICIES)}, got {name!r}"
        ) from None
