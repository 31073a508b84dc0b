"""``shm``: our own all-reduce / all-gather / send / recv for ranks on one host, over a
:class:`ShmSegment` with per-rank flags (the scheme of vLLM's CPU shm backend and SGLang's
sgl-kernel shm all-reduce, written here from the idea, not their code).

All-reduce of one chunk (``seq`` counts chunk operations; equal on every rank; the whole
sequence is one native call, ``all_reduce_chunk`` in shm_kernels.cpp)::

    1. wait DONE[r] >= seq-1 for all r      (everyone finished reading the previous op)
    2. copy my chunk into slot[me];          READY[me] = seq   (release)
    3. wait READY[r] >= seq for all r
    4. reduce my 1/W share of the elements over all slots (fp32 accumulate, rank order 0..W-1),
       writing it into slot[me] at that share;  REDUCED[me] = seq
    5. wait REDUCED[r] >= seq; copy share r from slot[r] for every r into the output
    6. DONE[me] = seq

Step 4 writes only my share of my own slot, which no other rank reads, so no extra buffer is
needed; the sum of each element is computed by one rank in a fixed order, so all ranks get
bitwise the same result. Tensors larger than ``shm_buffer_bytes`` go in chunks. Waits spin in
slices of 50 ms; between slices the waiter checks ``timeout_s`` and whether the rank it waits
for is still alive (its pid and its ALIVE flag), so a dead peer gives ``CommPeerLostError``
promptly and a stuck one ``CommTimeoutError`` after ``timeout_s``.
"""

from __future__ import annotations

import contextlib
import os
import time

import torch

from sagellm.comm_backend.base import CommBackendBase
from sagellm.comm_backend.errors import CommPeerLostError, CommTimeoutError
from sagellm.comm_backend.shm_ext import load_shm_ops
from sagellm.comm_backend.shm_segment import (
    ALIVE,
    DONE,
    FLAG_WORDS,
    READY,
    RECEIVED,
    REDUCED,
    SENT,
    ShmSegment,
    pid_alive,
)
from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.types import CommConfig

_SLICE_S = 0.05


class ShmBackend(CommBackendBase):
    """One rank of a shared-memory group on this host (see the module docstring)."""

    name = "shm"

    def __init__(self, config: CommConfig, stats: CommStats | None = None) -> None:
        super().__init__(config, stats)
        self.ops = load_shm_ops()
        self.seg = ShmSegment(
            f"sagellm_{config.group_name}",
            config.world_size,
            config.rank,
            config.shm_buffer_bytes,
            config.timeout_s,
        )
        self._seq = 0
        self._p2p_seq = {}  # (src, dst) -> number of chunks moved
        seg = self.seg
        seg.set_pid()
        self.ops.store_release(seg.rank_flags, seg.rank_flag(self.rank, ALIVE), 1)
        try:
            self._wait_rank_flags(ALIVE, 1, "attach")
        except Exception:
            self._abort()
            self.seg.close()  # unlinks the name if attach never completed
            self.seg = None
            raise
        if self.rank == 0:
            seg.unlink_if_mine()  # every rank has it mapped: the name is no longer needed

    # --- waiting with liveness and timeout ---------------------------------------------------
    def _wait(self, flags: torch.Tensor, idx: dict[int, int], target: int, op: str) -> None:
        """Wait until ``flags[i] >= target`` for every flag index ``i`` of ``idx`` (index ->
        the rank that sets it)."""
        indices = list(idx)
        deadline = time.monotonic() + self.config.timeout_s
        while True:
            behind = self.ops.wait_geq(flags, indices, target, _SLICE_S)
            if behind < 0:
                return
            self._check_stalled(idx[behind], deadline, op)

    def _check_stalled(self, peer: int, deadline: float, op: str) -> None:
        """A wait on ``peer`` ran out of its slice: raise if it died, left or ``deadline``
        (time.monotonic) passed; return to wait again otherwise."""
        alive_flag = self.seg.rank_flag(peer, ALIVE)
        pid = self.seg.pid(peer)  # 0 until the peer attached
        left = self.ops.load_acquire(self.seg.rank_flags, alive_flag) < 0
        if left or (pid != 0 and not pid_alive(pid)):
            self._abort()
            raise CommPeerLostError(
                f"shm {op}: rank {peer} (pid {pid}) died or left the group; "
                f"rank {self.rank} aborted"
            )
        if time.monotonic() > deadline:
            self._abort()
            raise CommTimeoutError(
                f"shm {op}: rank {self.rank} waited {self.config.timeout_s}s for rank {peer}"
            )

    def _wait_rank_flags(self, word: int, target: int, op: str) -> None:
        seg = self.seg
        idx = {seg.rank_flag(r, word): r for r in range(self.world_size) if r != self.rank}
        self._wait(seg.rank_flags, idx, target, op)

    def _publish(self, word: int, value: int) -> None:
        self.ops.store_release(self.seg.rank_flags, self.seg.rank_flag(self.rank, word), value)

    # --- collectives -------------------------------------------------------------------------
    def _chunks(self, tensor: torch.Tensor):
        flat = tensor.view(-1)
        per = max(1, self.seg.slot_bytes // tensor.element_size())
        for start in range(0, flat.numel(), per):
            yield flat[start : start + per]

    def _staged(self, op: str, native, *args) -> None:
        """One chunk operation: ``native(segment..., *args, seq, stage, slice)`` runs it to the
        end, or returns early with the stage and flag of a stalled wait; resume there while the
        stalled peer lives and ``timeout_s`` has not passed."""
        seg = self.seg
        self._seq += 1
        stage, deadline = 0, time.monotonic() + self.config.timeout_s
        head = (seg.raw, seg.rank_flags, seg.slots_off, seg.slot_bytes)
        while (status := native(*head, *args, self._seq, stage, _SLICE_S)) >= 0:
            stage = status >> 32
            self._check_stalled((status & 0xFFFF_FFFF) // FLAG_WORDS, deadline, op)

    def _all_reduce(self, tensor: torch.Tensor) -> None:
        for chunk in self._chunks(tensor):
            self._staged("all_reduce", self.ops.all_reduce_chunk, chunk, self.world_size, self.rank)

    def _all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        w = self.world_size
        out = torch.empty((w, *tensor.shape), dtype=tensor.dtype)
        flat_in, flat_out = tensor.view(-1), out.view(w, -1)
        per = max(1, self.seg.slot_bytes // tensor.element_size())
        for start in range(0, max(flat_in.numel(), 1), per):
            chunk = flat_in[start : start + per]
            self._staged(
                "all_gather", self.ops.all_gather_chunk, chunk, flat_out, start, w, self.rank
            )
        return out

    def _barrier(self) -> None:
        self._seq += 1
        self._wait_rank_flags(DONE, self._seq - 1, "barrier")
        self._publish(READY, self._seq)
        self._wait_rank_flags(READY, self._seq, "barrier")
        self._publish(REDUCED, self._seq)
        self._publish(DONE, self._seq)

    # --- point to point through the (src, dst) mailbox ----------------------------------------
    def _send(self, tensor: torch.Tensor, dst: int) -> None:
        seg, key = self.seg, (self.rank, dst)
        box = seg.mailbox(self.rank, dst)
        for chunk in self._chunks(tensor):
            k = self._p2p_seq.get(key, 0) + 1
            self._p2p_seq[key] = k
            self._wait(seg.pair_flags, {seg.pair_flag(*key, RECEIVED): dst}, k - 1, "send")
            self.ops.copy_bytes(box[: chunk.nbytes].view(chunk.dtype), chunk)
            self.ops.store_release(seg.pair_flags, seg.pair_flag(*key, SENT), k)

    def _recv(self, tensor: torch.Tensor, src: int) -> None:
        seg, key = self.seg, (src, self.rank)
        box = seg.mailbox(src, self.rank)
        for chunk in self._chunks(tensor):
            k = self._p2p_seq.get(key, 0) + 1
            self._p2p_seq[key] = k
            self._wait(seg.pair_flags, {seg.pair_flag(*key, SENT): src}, k, "recv")
            self.ops.copy_bytes(chunk, box[: chunk.nbytes].view(chunk.dtype))
            self.ops.store_release(seg.pair_flags, seg.pair_flag(*key, RECEIVED), k)

    # --- teardown ----------------------------------------------------------------------------
    def _abort(self) -> None:
        """Tell the peers this rank is gone (ALIVE = -1) so they stop waiting on it."""
        if getattr(self, "seg", None) is not None:
            self._publish(ALIVE, -1)

    def _close(self) -> None:
        if self.seg is not None:
            self._abort()
            self.seg.close()
            self.seg = None

    def __del__(self) -> None:
        if not self.closed and getattr(self, "seg", None) is not None and os.getpid():
            with contextlib.suppress(Exception):
                self.close()
