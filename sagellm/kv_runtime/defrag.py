"""Defragmentation: compact a pool's occupied blocks into its lowest ids.

::

    before  [A . B . . C . D]   free runs 1,2,1   fragmentation 1 - 2/4 = 0.5
    after   [A D B C . . . .]   one free run      fragmentation 0

Every occupied block (used or cached) with id >= the number of occupied blocks moves into the
lowest free id; block tables and any index pointing at moved blocks are rewritten through the
``remap`` callbacks. KV data moves with the block, so outputs do not change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from sagellm.core.types import BlockId
from sagellm.kv_runtime.pool import KVPool
from sagellm.kv_runtime.types import DefragResult


def plan_compaction(pool: KVPool) -> dict[BlockId, BlockId]:
    """old -> new id for every occupied block that must move."""
    free = set(pool.free_block_ids())
    num_occupied = pool.num_blocks - len(free)
    holes = sorted(b for b in free if b < num_occupied)
    movers = [b for b in range(num_occupied, pool.num_blocks) if b not in free]
    return dict(zip(movers, holes, strict=True))


def defragment(
    pool: KVPool, remap: list[Callable[[Mapping[BlockId, BlockId]], object]]
) -> DefragResult:
    """Compact ``pool`` and call each ``remap(mapping)`` so holders rewrite their ids."""
    t0 = time.perf_counter()
    before = pool.get_fragmentation()
    mapping = plan_compaction(pool)
    for src, dst in mapping.items():
        pool.move_block(src, dst)
    pool.sort_free_list()
    for fn in remap:
        fn(mapping)
    return DefragResult(mapping, before, pool.get_fragmentation(), time.perf_counter() - t0)
