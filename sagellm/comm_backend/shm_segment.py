"""A named shared-memory segment under /dev/shm that every rank of one host maps.

Layout (offsets in bytes; W = world_size, S = slot_bytes)::

    0       header: magic, world_size, slot_bytes, pids[W]     (4 KiB)
    4096    rank flags: per rank 16 int64 words (128 B, own cache lines):
            [READY, REDUCED, DONE, ALIVE, ...]
    R       pair flags: per ordered pair (src, dst) 16 int64 words: [SENT, RECEIVED, ...]
    D       W data slots of S bytes (collectives)
    M       W*W mailboxes of S bytes (send/recv), mailbox (src, dst) at M + (src*W+dst)*S

Lifetime: rank 0 creates the file (after removing a stale one whose creator is dead), every
rank attaches, and as soon as all have attached rank 0 unlinks the name. The memory then lives
exactly as long as some rank maps it, so a killed rank can leak nothing; ``close`` unlinks too
(whoever still sees its own inode under the name) for the case where attach never completed.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from pathlib import Path

import torch

from sagellm.comm_backend.errors import CommTimeoutError
from sagellm.core.errors import ConfigError

MAGIC = 0x5341_4745_4C4C_4D31  # "SAGELLM1"
HEADER_BYTES = 4096
FLAG_WORDS = 16  # int64 words per rank / per pair: 128 bytes
READY, REDUCED, DONE, ALIVE = 0, 1, 2, 3
SENT, RECEIVED = 0, 1
MAX_WORLD_SIZE = 64
SHM_DIR = Path("/dev/shm")


def _round_up(n: int, k: int = 4096) -> int:
    return (n + k - 1) // k * k


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


class ShmSegment:
    """The mapped segment of one rank, with typed views of its regions."""

    def __init__(self, name: str, world_size: int, rank: int, slot_bytes: int, timeout_s: float):
        if world_size > MAX_WORLD_SIZE:
            raise ConfigError(f"comm.world_size must be <= {MAX_WORLD_SIZE} for shm")
        self.path = SHM_DIR / name
        self.world_size, self.rank, self.slot_bytes = world_size, rank, slot_bytes
        w = world_size
        self.rank_flags_off = HEADER_BYTES
        self.pair_flags_off = _round_up(self.rank_flags_off + w * FLAG_WORDS * 8)
        self.slots_off = _round_up(self.pair_flags_off + w * w * FLAG_WORDS * 8)
        self.mail_off = self.slots_off + w * slot_bytes
        self.size_bytes = self.mail_off + w * w * slot_bytes
        fd = self._create(timeout_s) if rank == 0 else self._open(timeout_s)
        try:
            self.inode = os.fstat(fd).st_ino
            self._mm = mmap.mmap(fd, self.size_bytes)
        finally:
            os.close(fd)
        self.raw = torch.frombuffer(self._mm, dtype=torch.uint8)
        self.header = self.raw[:HEADER_BYTES].view(torch.int64)
        self.rank_flags = self.raw[self.rank_flags_off : self.pair_flags_off].view(torch.int64)
        self.pair_flags = self.raw[self.pair_flags_off : self.slots_off].view(torch.int64)

    def _create(self, timeout_s: float) -> int:
        if self.path.exists():
            owner = self._owner_pid()
            if owner is not None and owner != os.getpid() and pid_alive(owner):
                raise ConfigError(
                    f"comm.group_name: shm segment {self.path} is in use by live pid {owner}; "
                    "pick another group_name"
                )
            self.path.unlink(missing_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        os.ftruncate(fd, self.size_bytes)
        head = torch.zeros(3 + self.world_size, dtype=torch.int64)
        head[1], head[2], head[3] = self.world_size, self.slot_bytes, os.getpid()
        os.pwrite(fd, head[1:].numpy().tobytes(), 8)
        os.pwrite(fd, MAGIC.to_bytes(8, "little"), 0)  # last: marks the header complete
        return fd

    def _owner_pid(self) -> int | None:
        try:
            with open(self.path, "rb") as f:
                raw = f.read(32)
        except FileNotFoundError:
            return None
        return int.from_bytes(raw[24:32], "little") if len(raw) == 32 else None

    def _open(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR)
                head = os.pread(fd, 24, 0)
                if len(head) == 24 and int.from_bytes(head[:8], "little") == MAGIC:
                    break
                os.close(fd)
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise CommTimeoutError(
                    f"shm: rank {self.rank} found no segment {self.path} from rank 0 within "
                    f"{timeout_s}s"
                )
            time.sleep(0.005)  # polling a file that rank 0 has not created yet
        ws = int.from_bytes(head[8:16], "little")
        sb = int.from_bytes(head[16:24], "little")
        if ws != self.world_size or sb != self.slot_bytes:
            os.close(fd)
            raise ConfigError(
                f"comm.world_size {self.world_size} (shm_buffer_bytes {self.slot_bytes}) does "
                f"not match the group's world_size {ws} (shm_buffer_bytes {sb}) at {self.path}"
            )
        return fd

    def slot(self, rank: int) -> torch.Tensor:
        off = self.slots_off + rank * self.slot_bytes
        return self.raw[off : off + self.slot_bytes]

    def mailbox(self, src: int, dst: int) -> torch.Tensor:
        off = self.mail_off + (src * self.world_size + dst) * self.slot_bytes
        return self.raw[off : off + self.slot_bytes]

    def rank_flag(self, rank: int, word: int) -> int:
        return rank * FLAG_WORDS + word

    def pair_flag(self, src: int, dst: int, word: int) -> int:
        return (src * self.world_size + dst) * FLAG_WORDS + word

    def set_pid(self) -> None:
        self.header[3 + self.rank] = os.getpid()

    def pid(self, rank: int) -> int:
        return int(self.header[3 + rank])

    def unlink_if_mine(self) -> None:
        """Remove the name if it still names this segment (not a newer group's)."""
        try:
            if os.stat(self.path).st_ino == self.inode:
                self.path.unlink()
        except FileNotFoundError:
            pass

    def close(self) -> None:
        self.unlink_if_mine()
        del self.raw, self.header, self.rank_flags, self.pair_flags
        # BufferError: a caller still holds a view; the GC unmaps it later
        with contextlib.suppress(BufferError):
            self._mm.close()
