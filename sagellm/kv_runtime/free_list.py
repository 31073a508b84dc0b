"""Fragmentation of a set of free block ids (shared by every store)."""

from __future__ import annotations

from collections.abc import Iterable


def largest_free_run(free_ids: Iterable[int]) -> int:
    """Length of the longest run of consecutive ids."""
    best = run = 0
    prev = None
    for b in sorted(free_ids):
        run = run + 1 if prev is not None and b == prev + 1 else 1
        best = max(best, run)
        prev = b
    return best


def fragmentation(free_ids: Iterable[int]) -> float:
    """External fragmentation in [0, 1): ``1 - largest free run / free blocks`` (0 when the
    free blocks are one contiguous range or there are none)."""
    ids = list(free_ids)
    if not ids:
        return 0.0
    return 1.0 - largest_free_run(ids) / len(ids)
