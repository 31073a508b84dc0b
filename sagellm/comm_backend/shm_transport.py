"""``ShmTransport``: KV payloads through a shared-memory staging segment (ranks on one host),
with the small control messages on a :class:`TcpTransport`.

The sending side creates ``/dev/shm/sagellm_kv_<uuid>`` with two staging buffers of
``buffer_bytes`` each and tells the receiver its name; once the receiver has mapped it the name
is unlinked (the memory then lives while either side maps it, so a crash leaks nothing).
A payload moves in chunks alternating between the two buffers: the sender copies chunk k into
buffer k % 2 and sends ``{"chunk": k, "nbytes"}`` (chunk 0's message carries the header); the
receiver copies it out and acks, and the sender waits for chunk k-2's ack before reusing a
buffer (copy-in of one chunk overlaps copy-out of the previous). Copies are one-thread memcpy
(the shm C++ primitive): torch's parallel copy wakes OpenMP workers whose spin-wait starves the
peer process on a small host. Same errors as the TCP transport (its control connection carries
them).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import uuid
from pathlib import Path

import torch

from sagellm.comm_backend.errors import CommError
from sagellm.comm_backend.shm_ext import load_shm_ops
from sagellm.comm_backend.tcp_transport import TcpTransport


class ShmTransport:
    """One end of a shared-memory staged transport over a connected control stream."""

    name = "shm"

    def __init__(self, control: TcpTransport, is_creator: bool, buffer_bytes: int = 8 << 20):
        self.control = control
        if is_creator:
            name = f"sagellm_kv_{uuid.uuid4().hex[:16]}"
            path = Path("/dev/shm") / name
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.ftruncate(fd, 2 * buffer_bytes)
                self._mm = mmap.mmap(fd, 2 * buffer_bytes)
                control.send({"shm_name": name, "buffer_bytes": buffer_bytes})
                ack, _ = control.recv()
            finally:
                os.close(fd)
                path.unlink(missing_ok=True)
            if not ack.get("attached"):
                raise CommError(f"shm transport: receiver could not map {name}: {ack}")
        else:
            hello, _ = control.recv()
            name, buffer_bytes = hello["shm_name"], int(hello["buffer_bytes"])
            fd = os.open(Path("/dev/shm") / name, os.O_RDWR)
            try:
                self._mm = mmap.mmap(fd, 2 * buffer_bytes)
            finally:
                os.close(fd)
            control.send({"attached": True})
        self.buffer_bytes = buffer_bytes
        self._ops = load_shm_ops()
        self._raw = torch.frombuffer(self._mm, dtype=torch.uint8)

    def _buf(self, k: int, nbytes: int) -> torch.Tensor:
        off = (k % 2) * self.buffer_bytes
        return self._raw[off : off + nbytes]

    def send(self, header: dict, payload: torch.Tensor | None = None) -> None:
        body = (
            torch.empty(0, dtype=torch.uint8)
            if payload is None
            else payload.contiguous().view(torch.uint8).view(-1)
        )
        total = body.numel()
        num_chunks = -(-total // self.buffer_bytes)
        acked = 0
        for k in range(max(num_chunks, 1)):
            if k - acked >= 2:
                self.control.recv()
                acked += 1
            lo = k * self.buffer_bytes
            chunk = body[lo : lo + self.buffer_bytes]
            self._ops.copy_bytes(self._buf(k, chunk.numel()), chunk)
            msg = {"chunk": k, "nbytes": chunk.numel()}
            if k == 0:  # the header rides with the first chunk: one message less per transfer
                msg.update(header, _nbytes=total, _chunks=num_chunks)
            self.control.send(msg)
        for _ in range(acked, num_chunks):
            self.control.recv()

    def recv(self) -> tuple[dict, torch.Tensor]:
        header, _ = self.control.recv()
        total, num_chunks = int(header.pop("_nbytes")), int(header.pop("_chunks"))
        out = torch.empty(total, dtype=torch.uint8)
        msg = header
        for k in range(num_chunks):
            if k:
                msg, _ = self.control.recv()
            lo, n = k * self.buffer_bytes, int(msg["nbytes"])
            self._ops.copy_bytes(out[lo : lo + n], self._buf(k, n))
            self.control.send({"ack": k})
        header.pop("chunk"), header.pop("nbytes")
        return header, out

    def close(self) -> None:
        del self._raw
        with contextlib.suppress(BufferError):  # a view is still alive; the GC unmaps it
            self._mm.close()
        self.control.close()
