"""``TcpTransport``: framed messages over one TCP connection (between hosts, or loopback).

Frame: ``<u64 header_len><json header><u64 payload_len><payload bytes>``. ``send(header,
payload)`` writes one frame; ``recv()`` returns ``(header, payload)`` with the payload read
straight into a fresh uint8 tensor. Every socket operation has ``timeout_s``: a silent peer gives
``CommTimeoutError``, a closed or reset connection (a dead peer: the kernel closes its sockets)
gives ``CommPeerLostError``. A port already bound gives ``ConfigError`` naming it.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
import time

import torch

from sagellm.comm_backend.errors import CommPeerLostError, CommTimeoutError
from sagellm.core.errors import ConfigError

_U64 = struct.Struct("<Q")


class TcpTransport:
    """One end of a connected TCP stream (make it with :meth:`listen` or :meth:`connect`)."""

    name = "tcp"

    def __init__(self, sock: socket.socket, timeout_s: float) -> None:
        self.sock = sock
        self.timeout_s = timeout_s
        sock.settimeout(timeout_s)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @classmethod
    def bind(cls, addr: str, port: int) -> socket.socket:
        """A listening socket on ``addr:port`` (port 0 picks a free one)."""
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            srv.bind((addr, port))
        except OSError as e:
            srv.close()
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"kv_transfer.port {port} on {addr} is already in use") from None
            raise
        srv.listen(1)
        return srv

    @classmethod
    def accept(cls, srv: socket.socket, timeout_s: float) -> TcpTransport:
        srv.settimeout(timeout_s)
        try:
            conn, _ = srv.accept()
        except TimeoutError:
            raise CommTimeoutError(f"tcp: no peer connected within {timeout_s}s") from None
        finally:
            srv.close()
        return cls(conn, timeout_s)

    @classmethod
    def connect(cls, addr: str, port: int, timeout_s: float) -> TcpTransport:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return cls(socket.create_connection((addr, port), timeout=timeout_s), timeout_s)
            except (TimeoutError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise CommTimeoutError(
                        f"tcp: could not connect to {addr}:{port} within {timeout_s}s"
                    ) from None
                time.sleep(0.02)  # the listener is not up yet

    def _recv_exact(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            try:
                n = self.sock.recv_into(view[got:])
            except TimeoutError:
                raise CommTimeoutError(f"tcp recv: peer silent for {self.timeout_s}s") from None
            except (ConnectionResetError, BrokenPipeError) as e:
                raise CommPeerLostError(f"tcp recv: connection lost ({e})") from None
            if n == 0:
                raise CommPeerLostError(
                    f"tcp recv: peer closed the connection after {got}/{len(view)} bytes"
                )
            got += n

    def send(self, header: dict, payload: torch.Tensor | None = None) -> None:
        head = json.dumps(header).encode()
        body = b"" if payload is None else payload.contiguous().view(torch.uint8).numpy()
        try:
            self.sock.sendall(_U64.pack(len(head)) + head + _U64.pack(len(body)))
            if len(body):
                self.sock.sendall(memoryview(body))
        except TimeoutError:
            raise CommTimeoutError(f"tcp send: peer not reading for {self.timeout_s}s") from None
        except (ConnectionResetError, BrokenPipeError) as e:
            raise CommPeerLostError(f"tcp send: connection lost ({e})") from None

    def recv(self) -> tuple[dict, torch.Tensor]:
        n = bytearray(8)
        self._recv_exact(memoryview(n))
        head = bytearray(_U64.unpack(n)[0])
        self._recv_exact(memoryview(head))
        self._recv_exact(memoryview(n))
        payload = torch.empty(_U64.unpack(n)[0], dtype=torch.uint8)
        if payload.numel():
            self._recv_exact(memoryview(payload.numpy()))
        return json.loads(head), payload

    def close(self) -> None:
        self.sock.close()
