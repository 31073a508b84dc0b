"""ParkingQueue: blocks in recency order whose victim search can set unevictable blocks aside.

A policy that evicts the oldest evictable block of a queue (LRU, ARC's two lists) passes over
pinned or referenced blocks at every search; with many of them at the old end that is O(n)
per victim. Under ``PolicyContext.evictable_hints`` the runtime reports every block that turns
evictable (``on_evictable``), so a block found unevictable can wait aside (parked) until then
and the search never meets it again. A returning block re-enters at its old place: recency is
a stamp per block, and the search takes the smaller of the order's front and a heap of
returned blocks::

    _order    OrderedDict, stamp order      front ──► oldest never-parked block
    _heap     (stamp, block) of returned     top   ──► oldest returned block
    _parked   set aside until on_evictable

So the victim is the evictable block of smallest stamp, as without parking. Each block is in
exactly one of ``_order``, ``_parked``, ``_returned`` (the heap may hold stale pairs, skipped
by stamp). O(1) per push/touch/remove, O(log n) amortized per victim.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable

from sagellm.core.types import BlockId


class ParkingQueue:
    """Blocks oldest first; ``len`` counts parked blocks too (they are still tracked)."""

    def __init__(self) -> None:
        self._order: OrderedDict[BlockId, None] = OrderedDict()
        self._stamp: dict[BlockId, int] = {}  # larger = more recent
        self._clock = itertools.count()
        self._parked: set[BlockId] = set()
        self._returned: set[BlockId] = set()
        self._heap: list[tuple[int, BlockId]] = []

    def __len__(self) -> int:
        return len(self._stamp)

    def __bool__(self) -> bool:
        return bool(self._stamp)

    def __contains__(self, block_id: object) -> bool:
        return block_id in self._stamp

    def _unlink(self, block_id: BlockId) -> None:
        if block_id in self._order:
            del self._order[block_id]
        elif block_id in self._parked:
            self._parked.remove(block_id)
        else:
            self._returned.remove(block_id)  # its heap pair goes stale

    def push(self, block_id: BlockId) -> None:
        """Add ``block_id`` as the most recent (a new block)."""
        self._order[block_id] = None
        self._stamp[block_id] = next(self._clock)

    def touch(self, block_id: BlockId) -> None:
        """Make a tracked block the most recent (KeyError when it is not tracked)."""
        if block_id in self._order:
            self._order.move_to_end(block_id)
        else:
            self._unlink(block_id)  # KeyError for an unknown block
            self._order[block_id] = None
        self._stamp[block_id] = next(self._clock)

    def remove(self, block_id: BlockId) -> None:
        self._unlink(block_id)
        del self._stamp[block_id]

    def on_evictable(self, block_id: BlockId) -> None:
        """A parked block may be a victim again: back to its place in recency order."""
        if block_id in self._parked:
            self._parked.remove(block_id)
            self._returned.add(block_id)
            heapq.heappush(self._heap, (self._stamp[block_id], block_id))

    def unpark_all(self) -> None:
        for b in list(self._parked):
            self.on_evictable(b)

    def _oldest(self) -> BlockId | None:
        heap, stamp = self._heap, self._stamp
        while heap and (heap[0][1] not in self._returned or stamp[heap[0][1]] != heap[0][0]):
            heapq.heappop(heap)  # stale: removed, touched or parked again since
        front = next(iter(self._order), None)
        if not heap:
            return front
        if front is None or heap[0][0] < stamp[front]:
            return heap[0][1]
        return front

    def pop_oldest(
        self,
        ok: Callable[[BlockId], bool] | None,
        num_blocks: int = 1,
        park: bool = False,
        on_pop: Callable[[BlockId], None] | None = None,
    ) -> list[BlockId]:
        """Remove and return up to ``num_blocks`` oldest blocks ``ok`` accepts (all when None).
        Blocks passed over are parked when ``park``, else keep their places. ``on_pop`` sees
        each block as it leaves, before the next search (it may call :meth:`on_evictable`)."""
        if ok is None and not self._returned and not self._parked:
            out = []
            while len(out) < num_blocks and self._order:
                b = self._order.popitem(last=False)[0]
                del self._stamp[b]
                out.append(b)
                if on_pop is not None:
                    on_pop(b)
            return out
        if not park and self._parked:
            self.unpark_all()  # another rule now: every block is a candidate again
        out, passed = [], []
        while len(out) < num_blocks:
            b = self._oldest()
            if b is None:
                break
            self._unlink(b)
            if ok is None or ok(b):
                out.append(b)
                del self._stamp[b]
                if on_pop is not None:
                    on_pop(b)
            else:
                passed.append(b)
                self._parked.add(b)
        if not park:
            for b in passed:
                self.on_evictable(b)
        return out
