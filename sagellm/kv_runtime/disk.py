"""DiskTier: KV blocks as checksummed files under a cache directory.

File layout of one block (``blk-<id>.kv``)::

    magic  b"SGLKV001"        8 bytes
    digest BLAKE2b-128        16 bytes, over the payload
    length payload bytes      8 bytes, little endian
    payload                   the block in canonical layout, raw bytes

A file whose magic, length or digest does not match reads as None: a miss that the caller
recomputes, never wrong KV. Each tier writes under its own fresh sub-directory, so two engines
sharing ``cache_dir`` never read each other's files.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import torch

from sagellm.core.types import BlockId
from sagellm.kv_runtime.slots import BlockSlots

_MAGIC = b"SGLKV001"
_HEADER_BYTES = 8 + 16 + 8


def _digest(payload: bytes | memoryview) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


class DiskTier(BlockSlots):
    """``num_blocks`` block slots stored as files; implements ``KVBackendProtocol``."""

    tier = "disk"

    def __init__(
        self,
        cache_dir: str | Path,
        num_blocks: int,
        block_shape: tuple[int, ...],
        dtype: torch.dtype,
    ) -> None:
        if num_blocks < 1:
            raise ValueError(f"disk tier num_blocks must be >= 1, got {num_blocks}")
        root = Path(cache_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.dir = root / f"sagellm-kv-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.dir.mkdir()
            probe = self.dir / ".probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise ValueError(f"kv_cache_dir {str(root)!r} is not writable: {err}") from None
        self._init_slots(num_blocks, block_shape, dtype)
        self._clock = 0
        self.num_checksum_failures = 0

    def path(self, block_id: BlockId) -> Path:
        return self.dir / f"blk-{block_id}.kv"

    def _drop(self, block_id: BlockId) -> None:
        self.path(block_id).unlink(missing_ok=True)

    def write_blocks(self, block_ids: Sequence[BlockId], data: torch.Tensor) -> None:
        """Write each block to a temp file, fsync-free, then rename into place (atomic)."""
        cpu = data.detach().to("cpu").contiguous()
        self._clock += 1
        for b, blk in zip(block_ids, cpu.unbind(0), strict=True):
            payload = blk.contiguous().view(torch.uint8).numpy().tobytes()
            tmp = self.path(b).with_suffix(".tmp")
            with open(tmp, "wb") as f:
                f.write(_MAGIC + _digest(payload) + len(payload).to_bytes(8, "little"))
                f.write(payload)
            os.replace(tmp, self.path(b))
            self._last_access[b] = self._clock

    def _read_one(self, block_id: BlockId) -> torch.Tensor | None:
        try:
            with open(self.path(block_id), "rb") as f:
                raw = bytearray(os.fstat(f.fileno()).st_size)
                f.readinto(raw)
        except OSError:
            return None
        payload = memoryview(raw)[_HEADER_BYTES:]
        ok = (
            len(raw) == _HEADER_BYTES + self.block_bytes
            and raw[:8] == _MAGIC
            and int.from_bytes(raw[24:32], "little") == self.block_bytes
            and raw[8:24] == _digest(payload)
        )
        if not ok:
            self.num_checksum_failures += 1
            return None
        flat = torch.frombuffer(raw, dtype=torch.uint8, offset=_HEADER_BYTES)
        return flat.view(self.dtype).view(self.block_shape)

    def read_blocks(self, block_ids: Sequence[BlockId]) -> tuple[torch.Tensor, tuple[bool, ...]]:
        """Blocks in canonical layout; a missing or corrupted file reads as not ok."""
        out = torch.empty((len(block_ids), *self.block_shape), dtype=self.dtype)
        ok = []
        for i, b in enumerate(block_ids):
            blk = self._read_one(b)
            ok.append(blk is not None)
            if blk is not None:
                out[i] = blk
        return out, tuple(ok)

    def close(self) -> None:
        """Delete this tier's files and directory."""
        for p in self.dir.glob("*"):
            p.unlink(missing_ok=True)
        self.dir.rmdir()
