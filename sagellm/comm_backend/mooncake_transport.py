"""``MooncakeTransport``: KV payloads written by Mooncake's transfer engine straight into the
peer's registered landing buffer (its TCP protocol here; RDMA where the NICs have it), with the
small control messages on a :class:`TcpTransport`.

Optional: needs ``mooncake-transfer-engine-non-cuda`` (extra ``sagellm[mooncake]``) and, for
its import, the system library libibverbs (Debian: ``libibverbs1``); without them the
constructor raises ``ConfigError`` saying so, and the tests skip. Handshake is Mooncake's
``P2PHANDSHAKE`` mode (no metadata server): each side initialises an engine on ``hostname``,
registers a send-staging and a receive-landing buffer of ``buffer_bytes``, and tells the peer
its session (``host:rpc_port``) and landing address over the control stream.
Per chunk: copy into staging, ``transfer_sync_write`` into the peer's landing buffer, send the
chunk message (chunk 0 carries the header), wait for the peer's ack (it copied the chunk out).
"""

from __future__ import annotations

import torch

from sagellm.comm_backend.errors import CommError
from sagellm.comm_backend.shm_ext import load_shm_ops
from sagellm.comm_backend.tcp_transport import TcpTransport
from sagellm.core.errors import ConfigError


def mooncake_available() -> bool:
    try:
        from mooncake.engine import TransferEngine  # noqa: F401
    except ImportError:
        return False
    return True


class MooncakeTransport:
    """One end of a Mooncake transfer-engine transport (see the module docstring)."""

    name = "mooncake"

    def __init__(
        self,
        control: TcpTransport,
        buffer_bytes: int = 8 << 20,
        hostname: str = "127.0.0.1",
        protocol: str = "tcp",
    ) -> None:
        try:
            from mooncake.engine import TransferEngine
        except ImportError as e:
            raise ConfigError(
                "kv_transfer.transport 'mooncake' needs mooncake-transfer-engine-non-cuda "
                f"(pip install 'sagellm[mooncake]') and libibverbs: {e}"
            ) from None
        self.control = control
        self.engine = TransferEngine()
        if self.engine.initialize(hostname, "P2PHANDSHAKE", protocol, "") != 0:
            raise CommError(f"mooncake: engine initialize on {hostname} ({protocol}) failed")
        self.buffer_bytes = buffer_bytes
        self._staging = torch.empty(buffer_bytes, dtype=torch.uint8)
        self._landing = torch.empty(buffer_bytes, dtype=torch.uint8)
        for buf in (self._staging, self._landing):
            if self.engine.register_memory(buf.data_ptr(), buf.numel()) != 0:
                raise CommError("mooncake: register_memory failed")
        session = f"{hostname}:{self.engine.get_rpc_port()}"
        control.send({"session": session, "landing": self._landing.data_ptr()})
        peer, _ = control.recv()
        self._peer_session, self._peer_landing = str(peer["session"]), int(peer["landing"])
        self._ops = load_shm_ops()

    def send(self, header: dict, payload: torch.Tensor | None = None) -> None:
        body = (
            torch.empty(0, dtype=torch.uint8)
            if payload is None
            else payload.contiguous().view(torch.uint8).view(-1)
        )
        total = body.numel()
        num_chunks = -(-total // self.buffer_bytes)
        for k in range(max(num_chunks, 1)):
            chunk = body[k * self.buffer_bytes : (k + 1) * self.buffer_bytes]
            n = chunk.numel()
            if n:
                self._ops.copy_bytes(self._staging[:n], chunk)
                rc = self.engine.transfer_sync_write(
                    self._peer_session, self._staging.data_ptr(), self._peer_landing, n
                )
                if rc != 0:
                    raise CommError(f"mooncake: transfer_sync_write of {n} bytes failed ({rc})")
            msg = {"chunk": k, "nbytes": n}
            if k == 0:
                msg.update(header, _nbytes=total, _chunks=num_chunks)
            self.control.send(msg)
            if k < num_chunks:
                self.control.recv()  # the peer copied the chunk out of its landing buffer

    def recv(self) -> tuple[dict, torch.Tensor]:
        header, _ = self.control.recv()
        total, num_chunks = int(header.pop("_nbytes")), int(header.pop("_chunks"))
        out = torch.empty(total, dtype=torch.uint8)
        msg = header
        for k in range(num_chunks):
            if k:
                msg, _ = self.control.recv()
            lo, n = k * self.buffer_bytes, int(msg["nbytes"])
            self._ops.copy_bytes(out[lo : lo + n], self._landing[:n])
            self.control.send({"ack": k})
        header.pop("chunk"), header.pop("nbytes")
        return header, out

    def close(self) -> None:
        for buf in (self._staging, self._landing):
            self.engine.unregister_memory(buf.data_ptr())
        self.control.close()
