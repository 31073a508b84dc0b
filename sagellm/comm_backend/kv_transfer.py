"""``KVTransferChannel``: moves KV blocks named by a :class:`TransferPlan` between two endpoints.

The channel owns one transport (``tcp`` or ``shm``; ``mooncake`` when installed) and the local
KV caches: a list with one tensor per layer, block-major (``caches[l][block_id]`` is one block
of layer ``l``, any trailing shape, e.g. ``(2, block_size, num_kv_heads, head_dim)``).

Wire layout of one transfer: layers in ``plan.layer_ids`` order, within a layer the blocks in
``plan.block_ids`` order::

    | layer l0: block b0 | b1 | ... | layer l1: block b0 | b1 | ... |

so ``total_bytes = len(layer_ids) * len(block_ids) * bytes_per_block`` (checked on both ends:
a mismatch is ``ConfigError`` naming both numbers). The receiver scatters into
``plan.dest_block_ids``. Bytes arrive unchanged (a copy, no dtype conversion).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from sagellm.comm_backend.protocol import KVTransportProtocol
from sagellm.comm_backend.shm_transport import ShmTransport
from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.tcp_transport import TcpTransport
from sagellm.comm_backend.types import TransferPlan
from sagellm.core.errors import ConfigError

KV_TRANSPORTS = ("mooncake", "shm", "tcp")


@dataclass(frozen=True)
class TransferRecord:
    """One completed transfer: bytes moved and seconds from gather to last byte sent (sender)
    or from header received to last block scattered (receiver)."""

    request_id: str
    num_blocks: int
    num_bytes: int
    latency_s: float


class KVTransferChannel:
    """One end of a KV block channel (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        caches: list[torch.Tensor],
        transport: KVTransportProtocol,
        stats: CommStats | None = None,
    ) -> None:
        if not caches:
            raise ConfigError("kv_transfer.caches must hold one tensor per layer, got none")
        shape, dtype = caches[0].shape, caches[0].dtype
        for i, c in enumerate(caches):
            if c.shape != shape or c.dtype != dtype or not c.is_contiguous():
                raise ConfigError(
                    f"kv_transfer.caches[{i}] must be contiguous {tuple(shape)} {dtype} like "
                    f"caches[0], got {tuple(c.shape)} {c.dtype}"
                )
        self.endpoint = endpoint
        self.caches = caches
        self.transport = transport
        self.stats = stats if stats is not None else CommStats()
        self.bytes_per_block = caches[0][0].numel() * caches[0].element_size()
        self.num_blocks = shape[0]

    def plan_bytes(self, num_blocks: int, num_layers: int | None = None) -> int:
        """``total_bytes`` of a plan moving ``num_blocks`` blocks of ``num_layers`` layers."""
        layers = len(self.caches) if num_layers is None else num_layers
        return layers * num_blocks * self.bytes_per_block

    def make_plan(
        self,
        target: str,
        block_ids: list[int],
        target_block_ids: list[int] | None = None,
        layer_ids: list[int] | None = None,
        request_id: str = "",
        num_tokens: int = 0,
    ) -> TransferPlan:
        """A plan from this endpoint to ``target`` with ``total_bytes`` filled in."""
        n_layers = len(self.caches) if layer_ids is None else len(layer_ids)
        return TransferPlan(
            self.endpoint,
            target,
            tuple(block_ids),
            self.plan_bytes(len(block_ids), n_layers),
            None if target_block_ids is None else tuple(target_block_ids),
            None if layer_ids is None else tuple(layer_ids),
            request_id,
            num_tokens,
        )

    def _layers(self, plan: TransferPlan) -> tuple[int, ...]:
        layers = tuple(range(len(self.caches))) if plan.layer_ids is None else plan.layer_ids
        for name, ids, n in (
            ("layer_ids", layers, len(self.caches)),
            ("block_ids", plan.block_ids, self.num_blocks),
            ("target_block_ids", plan.dest_block_ids, self.num_blocks),
        ):
            bad = [i for i in ids if not 0 <= i < n]
            if bad:
                raise ConfigError(f"transfer_plan.{name} must be in 0..{n - 1}, got {bad[:5]}")
        want = self.plan_bytes(len(plan.block_ids), len(layers))
        if plan.total_bytes != want:
            raise ConfigError(
                f"transfer_plan.total_bytes is {plan.total_bytes} but {len(layers)} layers x "
                f"{len(plan.block_ids)} blocks x {self.bytes_per_block} bytes = {want}"
            )
        return layers

    def transfer(self, plan: TransferPlan) -> TransferRecord:
        """Send the plan's blocks to the peer (blocks until the transport has taken them)."""
        layers = self._layers(plan)
        start = time.perf_counter()
        ids = torch.tensor(plan.block_ids, dtype=torch.long)
        payload = torch.cat([self.caches[layer].index_select(0, ids).view(-1) for layer in layers])
        self.transport.send({"plan": asdict(plan)}, payload.view(torch.uint8))
        return self._record("send", plan, start)

    def receive(self) -> tuple[TransferPlan, TransferRecord]:
        """Receive one transfer and scatter it into the local caches at ``dest_block_ids``."""
        header, payload = self.transport.recv()
        start = time.perf_counter()
        plan = plan_from_dict(header["plan"])
        self.write_blocks(plan, payload)
        return plan, self._record("recv", plan, start)

    def receive_raw(self) -> tuple[TransferPlan, torch.Tensor]:
        """Receive one transfer without writing it (the connector stages it)."""
        header, payload = self.transport.recv()
        return plan_from_dict(header["plan"]), payload

    def write_blocks(
        self, plan: TransferPlan, payload: torch.Tensor, dest_block_ids: list[int] | None = None
    ) -> None:
        """Scatter a received payload into the local caches (``dest_block_ids`` overrides)."""
        if dest_block_ids is not None:
            plan = TransferPlan(
                plan.source, plan.target, plan.block_ids, plan.total_bytes,
                tuple(dest_block_ids), plan.layer_ids, plan.request_id, plan.num_tokens,
            )  # fmt: skip
        layers = self._layers(plan)
        if payload.numel() != plan.total_bytes:
            raise ConfigError(
                f"kv_transfer payload has {payload.numel()} bytes, plan says {plan.total_bytes}"
            )
        ids = torch.tensor(plan.dest_block_ids, dtype=torch.long)
        per_layer = len(plan.block_ids) * self.bytes_per_block
        block_shape = self.caches[0].shape[1:]
        for k, layer in enumerate(layers):
            part = payload[k * per_layer : (k + 1) * per_layer].view(self.caches[layer].dtype)
            self.caches[layer].index_copy_(0, ids, part.view(len(ids), *block_shape))

    def _record(self, op, plan: TransferPlan, start: float) -> TransferRecord:
        latency = time.perf_counter() - start
        self.stats.record(op, plan.total_bytes, latency, start, self.transport.name)
        return TransferRecord(plan.request_id, len(plan.block_ids), plan.total_bytes, latency)

    def close(self) -> None:
        self.transport.close()


def plan_from_dict(d: dict) -> TransferPlan:
    def tup(x):
        return None if x is None else tuple(int(i) for i in x)

    return TransferPlan(
        str(d["source"]), str(d["target"]), tup(d["block_ids"]), int(d["total_bytes"]),
        tup(d["target_block_ids"]), tup(d["layer_ids"]), str(d.get("request_id", "")),
        int(d.get("num_tokens", 0)),
    )  # fmt: skip


def open_kv_channel(
    endpoint: str,
    caches: list[torch.Tensor],
    *,
    transport: Literal["tcp", "shm", "mooncake"] = "tcp",
    listen: bool,
    addr: str = "127.0.0.1",
    port: int,
    timeout_s: float = 30.0,
    shm_buffer_bytes: int = 8 << 20,
) -> KVTransferChannel:
    """Connect a channel to its peer: one side ``listen=True`` on ``addr:port``, the other
    connects there. ``shm`` adds the staging segment (same host only) over that connection,
    ``mooncake`` the transfer engine (optional, see :mod:`.mooncake_transport`)."""
    if transport not in KV_TRANSPORTS:
        raise ConfigError(f"kv_transfer.transport must be one of {list(KV_TRANSPORTS)}")
    if listen:
        control = TcpTransport.accept(TcpTransport.bind(addr, port), timeout_s)
    else:
        control = TcpTransport.connect(addr, port, timeout_s)
    t = control
    if transport == "shm":
        t = ShmTransport(control, listen, shm_buffer_bytes)
    elif transport == "mooncake":
        from sagellm.comm_backend.mooncake_transport import MooncakeTransport

        t = MooncakeTransport(control, shm_buffer_bytes, addr)
    return KVTransferChannel(endpoint, caches, t)
