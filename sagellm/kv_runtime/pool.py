"""KVPool: reference-counted KV blocks over one real tensor.

The device pool wraps the engine's cache ``kv[layer, K|V, block, kv_head, slot, head_dim]``
(``block_dim=2``); a host tier wraps ``[block, layer, K|V, kv_head, slot, head_dim]``
(``block_dim=0``). Each block is in exactly one state::

    free ──allocate──► used (ref >= 1) ──free (ref -> 0)──► free     (not cacheable)
                          ▲      │                    └──► cached  (cacheable: KV kept)
                          └incref┘ cached ──incref──► used;  cached ──reclaim──► free

Invariant: ``num_free + num_used + num_cached == num_blocks``. ``allocate`` takes free blocks
only (FIFO order) and returns None when too few are free; turning cached blocks back into free
ones is the caller's eviction decision (``reclaim``). A block whose KV is shared (ref > 1) or
cached is never written in place: ``copy_on_write`` gives the writer a private copy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import torch

from sagellm.core.types import BlockId, TenantId
from sagellm.kv_runtime.free_list import fragmentation
from sagellm.kv_runtime.types import AllocationResult, KVBlockInfo, TierName


def _runs(block_ids: Sequence[BlockId]) -> list[tuple[int, BlockId, int]]:
    """``(position, first id, length)`` of each run of consecutive ids, in order."""
    runs: list[tuple[int, BlockId, int]] = []
    for i, b in enumerate(block_ids):
        if runs and runs[-1][1] + runs[-1][2] == b:
            pos, start, n = runs[-1]
            runs[-1] = (pos, start, n + 1)
        else:
            runs.append((i, b, 1))
    return runs


class KVPool:
    """A fixed set of KV blocks inside ``tensor`` along ``block_dim``."""

    def __init__(self, tensor: torch.Tensor, block_dim: int = 2, tier: TierName = "device"):
        if tensor.shape[block_dim] < 1:
            raise ValueError(f"num_blocks must be >= 1, got {tensor.shape[block_dim]}")
        self.tensor = tensor
        self.block_dim = block_dim
        self.tier: TierName = tier
        self.num_blocks = tensor.shape[block_dim]
        self.block_bytes = tensor.numel() // self.num_blocks * tensor.element_size()
        self._ref = [0] * self.num_blocks
        self._free: deque[BlockId] = deque(range(self.num_blocks))
        self._cached: set[BlockId] = set()
        self._cacheable: set[BlockId] = set()
        self._owner: dict[BlockId, TenantId | None] = {}
        self._last_access = [0] * self.num_blocks
        self._clock = 0
        # called as fn(src, dst) after each block copy inside ``tensor`` (copy-on-write, move):
        # a tensor-parallel engine replays them on the other ranks' caches
        self.copy_listeners: list[Callable[[BlockId, BlockId], None]] = []

    # ------------------------------------------------------------------ counts

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    @property
    def num_used_blocks(self) -> int:
        """Blocks with ref > 0 plus cached ones (everything not on the free list)."""
        return self.num_blocks - len(self._free)

    @property
    def num_referenced_blocks(self) -> int:
        return self.num_blocks - len(self._free) - len(self._cached)

    # the engine's older name for the same numbers
    num_free = num_free_blocks
    num_used = num_referenced_blocks

    def ref_count(self, block_id: BlockId) -> int:
        return self._ref[block_id]

    def is_cached(self, block_id: BlockId) -> bool:
        return block_id in self._cached

    def free_block_ids(self) -> list[BlockId]:
        return list(self._free)

    def get_utilization(self) -> float:
        """Referenced blocks / all blocks (cached ref-0 blocks count as reusable, not used)."""
        return self.num_referenced_blocks / self.num_blocks

    def get_fragmentation(self) -> float:
        """``1 - largest contiguous free run / free blocks``; 0 when compact or full."""
        return fragmentation(self._free)

    def block_info(self, block_id: BlockId) -> KVBlockInfo:
        return KVBlockInfo(
            block_id,
            self.tier,
            self.block_bytes,
            self._owner.get(block_id),
            self._last_access[block_id],
            self._ref[block_id],
        )

    # ------------------------------------------------------------------ lifecycle

    def _touch(self, block_ids: Sequence[BlockId]) -> None:
        self._clock += 1
        for b in block_ids:
            self._last_access[b] = self._clock

    def allocate(self, n: int, tenant_id: TenantId | None = None) -> AllocationResult | None:
        """``n`` free blocks with ref 1, or None when fewer than ``n`` are free."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n > len(self._free):
            return None
        out = tuple([self._free.popleft() for _ in range(n)])
        for b in out:
            self._ref[b] = 1
            self._owner[b] = tenant_id
        self._touch(out)
        return AllocationResult(out, self.tier)

    def incref(self, block_ids: Sequence[BlockId]) -> None:
        """Share used or cached blocks (a cached block becomes used again)."""
        for b in block_ids:
            if self._ref[b] == 0:
                if b not in self._cached:
                    raise ValueError(f"block {b} is free; only used or cached blocks can be shared")
                self._cached.discard(b)
            self._ref[b] += 1
        self._touch(block_ids)

    def free(self, block_ids: Sequence[BlockId]) -> list[BlockId]:
        """Drop one reference per id; returns the blocks whose ref reached 0 (each goes to the
        cached set when cacheable, else to the free list)."""
        released = []
        for b in block_ids:
            if self._ref[b] <= 0:
                raise ValueError(f"block {b} freed but not allocated")
            self._ref[b] -= 1
            if self._ref[b] == 0:
                released.append(b)
                if b in self._cacheable:
                    self._cached.add(b)
                else:
                    self._release(b)
        return released

    def _release(self, b: BlockId) -> None:
        self._owner.pop(b, None)
        self._free.append(b)

    def set_cacheable(self, block_id: BlockId, cacheable: bool) -> None:
        """Cacheable blocks keep their KV at ref 0 (a prefix index points at them)."""
        if cacheable:
            self._cacheable.add(block_id)
            return
        self._cacheable.discard(block_id)
        if block_id in self._cached:
            self._cached.discard(block_id)
            self._release(block_id)

    def reclaim(self, block_ids: Sequence[BlockId]) -> None:
        """Turn cached blocks into free ones (the caller evicted their index entries)."""
        for b in block_ids:
            if b not in self._cached:
                raise ValueError(f"block {b} is not cached (ref {self._ref[b]})")
            self.set_cacheable(b, False)

    # ------------------------------------------------------------------ data

    def read_blocks(self, block_ids: Sequence[BlockId]) -> tuple[torch.Tensor, tuple[bool, ...]]:
        """A copy of the blocks, ``[n, ...canonical]`` (always readable in memory). Runs of
        consecutive ids are copied as one strided slab (``index_select`` over the block dim
        of the 6-D device layout is several times slower)."""
        shape = list(self.tensor.shape)
        del shape[self.block_dim]
        out = torch.empty((len(block_ids), *shape), dtype=self.tensor.dtype)
        if self.tensor.device.type == "cuda" and torch.cuda.is_available():
            out = out.pin_memory()
        for pos, start, n in _runs(block_ids):
            slab = self.tensor.narrow(self.block_dim, start, n).movedim(self.block_dim, 0)
            out[pos : pos + n].copy_(slab)  # blocking: the caller reads ``out`` right away
        return out, (True,) * len(block_ids)

    def write_blocks(self, block_ids: Sequence[BlockId], data: torch.Tensor) -> None:
        """Write ``data`` [n, ...canonical] into the blocks (host -> device is non-blocking
        from pinned memory)."""
        for pos, start, n in _runs(block_ids):
            dst = self.tensor.narrow(self.block_dim, start, n)
            dst.copy_(data[pos : pos + n].movedim(0, self.block_dim), non_blocking=True)
        self._touch(block_ids)

    def copy_from(
        self, src: KVPool, src_ids: Sequence[BlockId], dst_ids: Sequence[BlockId]
    ) -> None:
        """Copy blocks straight from another pool (one strided copy per run of ids that are
        consecutive on both sides; no staging buffer)."""
        pairs: list[tuple[BlockId, BlockId, int]] = []
        for s, d in zip(src_ids, dst_ids, strict=True):
            if pairs and pairs[-1][0] + pairs[-1][2] == s and pairs[-1][1] + pairs[-1][2] == d:
                pairs[-1] = (pairs[-1][0], pairs[-1][1], pairs[-1][2] + 1)
            else:
                pairs.append((s, d, 1))
        for s, d, n in pairs:
            slab = src.tensor.narrow(src.block_dim, s, n).movedim(src.block_dim, self.block_dim)
            self.tensor.narrow(self.block_dim, d, n).copy_(slab, non_blocking=True)
        self._touch(dst_ids)

    def copy_on_write(self, block_id: BlockId, tenant_id: TenantId | None = None) -> BlockId | None:
        """A block the caller may write: ``block_id`` itself when the caller is its only user
        and no index points at it, else a fresh copy (the caller's reference moves to it).
        None when no free block is left for the copy."""
        if self._ref[block_id] == 1 and block_id not in self._cacheable:
            return block_id
        got = self.allocate(1, tenant_id)
        if got is None:
            return None
        new = got.block_ids[0]
        self.tensor.select(self.block_dim, new).copy_(self.tensor.select(self.block_dim, block_id))
        for fn in self.copy_listeners:
            fn(block_id, new)
        self.free([block_id])
        return new

    def move_block(self, src: BlockId, dst: BlockId) -> None:
        """Move a used/cached block's data and state into free block ``dst`` (defrag)."""
        if self._ref[dst] != 0 or dst in self._cached or dst not in self._free:
            raise ValueError(f"move target {dst} is not free")
        self.tensor.select(self.block_dim, dst).copy_(self.tensor.select(self.block_dim, src))
        for fn in self.copy_listeners:
            fn(src, dst)
        self._free.remove(dst)
        self._ref[dst], self._ref[src] = self._ref[src], 0
        for s in (self._cached, self._cacheable):
            if src in s:
                s.discard(src)
                s.add(dst)
        self._owner[dst] = self._owner.pop(src, None)
        self._last_access[dst] = self._last_access[src]
        self._free.append(src)

    def sort_free_list(self) -> None:
        """Hand out the lowest free ids first from now on (after compaction)."""
        self._free = deque(sorted(self._free))
