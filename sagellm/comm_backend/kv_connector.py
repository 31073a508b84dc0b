"""KV connector in the shape of vLLM's ``KVConnectorBase_V1``, over a :class:`KVTransferChannel`.

Two halves, as in vLLM: the *scheduler side* decides what to load/save and builds a
:class:`KVConnectorMetadata` each step; the *worker side* binds it and moves KV during the
forward. A ``producer`` (prefill instance) saves each layer as soon as the forward wrote it; a
``consumer`` (decode instance) receives in a background thread into host staging and loads into
its own blocks layer by layer, so its forward can start on layer 0 while later layers are still
arriving.

Producer, per step::

    scheduler: update_state_after_alloc(req, block_ids, 0, n_prompt); build_connector_meta()
    worker:    bind_connector_metadata(m); for each layer: forward; save_kv_layer(l, kv)
               wait_for_save(); get_finished() -> (sent request ids, None)
    scheduler: request_finished(req, block_ids) -> (delay_free, params): free after "sent"

Consumer, per step::

    scheduler: get_num_new_matched_tokens(req, n_prompt, n_computed) -> (n_external, async)
               update_state_after_alloc(req, block_ids, n_external); build_connector_meta()
    worker:    bind_connector_metadata(m); start_load_kv(); per layer: wait_for_layer_load(l)
               get_finished() -> (None, loaded request ids)

Invariants: one transfer per (request, layer); the consumer writes into its own block ids (given
at ``update_state_after_alloc``), never the producer's. A dead peer surfaces as ``CommError`` from
the next call that needs it, within ``timeout_s``.
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import torch

from sagellm.comm_backend.errors import CommError, CommTimeoutError
from sagellm.comm_backend.kv_transfer import KVTransferChannel
from sagellm.core.errors import ConfigError

KVRole = Literal["producer", "consumer"]


@dataclass(frozen=True)
class KVRequestSpec:
    """One request's KV to move this step: its local block ids and prompt length (tokens)."""

    request_id: str
    block_ids: tuple[int, ...]
    num_tokens: int


@dataclass
class KVConnectorMetadata:
    """What the worker side does this step (built by the scheduler side)."""

    loads: list[KVRequestSpec] = field(default_factory=list)
    saves: list[KVRequestSpec] = field(default_factory=list)


class KVConnectorBase(ABC):
    """The connector contract (names and roles as in vLLM's ``KVConnectorBase_V1``)."""

    role: KVRole

    # --- scheduler side ---
    @abstractmethod
    def get_num_new_matched_tokens(
        self, request_id: str, num_prompt_tokens: int, num_computed_tokens: int
    ) -> tuple[int, bool]:
        """Tokens beyond ``num_computed_tokens`` whose KV the connector can supply, and whether
        they load asynchronously."""

    @abstractmethod
    def update_state_after_alloc(
        self,
        request_id: str,
        block_ids: list[int],
        num_external_tokens: int,
        num_prompt_tokens: int = 0,
    ) -> None:
        """The scheduler allocated ``block_ids`` for the request (load into / save from them)."""

    @abstractmethod
    def build_connector_meta(self) -> KVConnectorMetadata: ...

    @abstractmethod
    def request_finished(self, request_id: str, block_ids: list[int]) -> tuple[bool, dict | None]:
        """The request left the scheduler; True = do not free its blocks until ``get_finished``
        reports it (they are still being sent)."""

    # --- worker side ---
    @abstractmethod
    def bind_connector_metadata(self, meta: KVConnectorMetadata) -> None: ...

    @abstractmethod
    def start_load_kv(self) -> None: ...

    @abstractmethod
    def wait_for_layer_load(self, layer_id: int) -> None: ...

    @abstractmethod
    def save_kv_layer(self, layer_id: int, kv_layer: torch.Tensor) -> None: ...

    @abstractmethod
    def wait_for_save(self) -> None: ...

    @abstractmethod
    def get_finished(
        self, finished_req_ids: set[str] | None = None
    ) -> tuple[set[str] | None, set[str] | None]:
        """(requests whose sends completed, requests whose loads completed) since the last
        call; ``None`` for a side this role never has."""


class _Staged:
    """Consumer staging of one request: per-layer payloads as they arrive."""

    def __init__(self, num_tokens: int, num_blocks: int) -> None:
        self.num_tokens, self.num_blocks = num_tokens, num_blocks
        self.layers: dict[int, torch.Tensor] = {}
        self.plans: dict[int, object] = {}


class ChannelKVConnector(KVConnectorBase):
    """Producer or consumer connector over one :class:`KVTransferChannel` (push model: the
    producer sends every layer as it is computed; see the module docstring)."""

    def __init__(
        self, role: KVRole, channel: KVTransferChannel, peer: str, timeout_s: float = 30.0
    ) -> None:
        if role not in ("producer", "consumer"):
            raise ConfigError(f"kv_connector.role must be 'producer' or 'consumer', got {role!r}")
        self.role, self.channel, self.peer, self.timeout_s = role, channel, peer, timeout_s
        self.num_layers = len(channel.caches)
        self._pending: list[KVRequestSpec] = []
        self._meta = KVConnectorMetadata()
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._done: set[str] = set()
        if role == "producer":
            self._send_q: queue.Queue = queue.Queue()
            self._layers_sent: dict[str, int] = {}
            self._finished_reqs: set[str] = set()
            self._saving: set[str] = set()
            target = self._send_loop
        else:
            self._staged: dict[str, _Staged] = {}
            self._loaded_layers: dict[str, int] = {}
            self._load_thread: threading.Thread | None = None
            target = self._recv_loop
        self._thread = threading.Thread(target=target, name=f"kv-{role}", daemon=True)
        self._thread.start()

    # --- background threads ---
    def _send_loop(self) -> None:
        while True:
            item = self._send_q.get()
            if item is None:
                return
            spec, layer = item
            try:
                plan = self.channel.make_plan(
                    self.peer,
                    list(spec.block_ids),
                    layer_ids=[layer],
                    request_id=spec.request_id,
                    num_tokens=spec.num_tokens,
                )
                self.channel.transfer(plan)
            except BaseException as e:  # surfaced by the next wait_for_save / get_finished
                with self._cv:
                    self._error = e
                    self._cv.notify_all()
                return
            with self._cv:
                self._layers_sent[spec.request_id] = self._layers_sent.get(spec.request_id, 0) + 1
                self._send_q.task_done()
                self._cv.notify_all()

    def _recv_loop(self) -> None:
        while True:
            try:
                plan, payload = self.channel.receive_raw()
            except BaseException as e:
                with self._cv:
                    self._error = e
                    self._cv.notify_all()
                return
            with self._cv:
                st = self._staged.get(plan.request_id)
                if st is None:
                    st = _Staged(plan.num_tokens, len(plan.block_ids))
                    self._staged[plan.request_id] = st
                (layer,) = plan.layer_ids
                st.layers[layer], st.plans[layer] = payload, plan
                self._cv.notify_all()

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.timeout_s
        with self._cv:
            while not ready():
                if self._error is not None:
                    raise CommError(f"kv_connector {what}: peer failed: {self._error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommTimeoutError(f"kv_connector {what}: not done in {self.timeout_s}s")
                self._cv.wait(min(left, 0.1))

    # --- scheduler side ---
    def get_num_new_matched_tokens(
        self, request_id: str, num_prompt_tokens: int, num_computed_tokens: int
    ) -> tuple[int, bool]:
        if self.role == "producer":
            return 0, False
        with self._cv:
            st = self._staged.get(request_id)
            if st is None:  # nothing arrived yet: compute locally (or ask again next step)
                return 0, False
            # the last prompt token is recomputed locally to produce the first output logits
            n = min(st.num_tokens, num_prompt_tokens - 1) - num_computed_tokens
            return max(0, n), True

    def num_arrived_layers(self, request_id: str) -> int:
        """Consumer: layers of ``request_id`` staged in host memory so far (all arrived when
        it equals ``num_layers``; 0 for an unknown request or a producer). A scheduler admits
        a request once all arrived, so its loads never wait on the wire."""
        if self.role == "producer":
            return 0
        with self._cv:
            st = self._staged.get(request_id)
            return 0 if st is None else len(st.layers)

    def update_state_after_alloc(
        self,
        request_id: str,
        block_ids: list[int],
        num_external_tokens: int,
        num_prompt_tokens: int = 0,
    ) -> None:
        if self.role == "producer":
            self._pending.append(KVRequestSpec(request_id, tuple(block_ids), num_prompt_tokens))
        elif num_external_tokens > 0:
            with self._cv:
                st = self._staged[request_id]
            if len(block_ids) < st.num_blocks:
                raise ConfigError(
                    f"kv_connector: request {request_id!r} needs {st.num_blocks} blocks for its "
                    f"remote KV, got {len(block_ids)}"
                )
            spec = KVRequestSpec(request_id, tuple(block_ids[: st.num_blocks]), st.num_tokens)
            self._pending.append(spec)

    def build_connector_meta(self) -> KVConnectorMetadata:
        specs, self._pending = self._pending, []
        if self.role == "producer":
            return KVConnectorMetadata(saves=specs)
        return KVConnectorMetadata(loads=specs)

    def request_finished(self, request_id: str, block_ids: list[int]) -> tuple[bool, dict | None]:
        if self.role == "consumer":
            with self._cv:
                self._staged.pop(request_id, None)
            return False, None
        with self._cv:
            self._finished_reqs.add(request_id)
            sending = request_id in self._saving and (
                self._layers_sent.get(request_id, 0) < self.num_layers
            )
        return sending, {"remote_endpoint": self.channel.endpoint, "num_layers": self.num_layers}

    # --- worker side ---
    def bind_connector_metadata(self, meta: KVConnectorMetadata) -> None:
        self._meta = meta

    def save_kv_layer(self, layer_id: int, kv_layer: torch.Tensor) -> None:
        """Queue layer ``layer_id`` of every request being saved this step (returns at once;
        ``kv_layer`` must be the channel's ``caches[layer_id]``, which the sender reads)."""
        if self.role != "producer":
            return
        if kv_layer.data_ptr() != self.channel.caches[layer_id].data_ptr():
            raise ConfigError(f"kv_connector.save_kv_layer: kv_layer is not caches[{layer_id}]")
        for spec in self._meta.saves:
            with self._cv:
                self._saving.add(spec.request_id)
            self._send_q.put((spec, layer_id))

    def wait_for_save(self) -> None:
        if self.role != "producer":
            return
        self._wait(lambda: self._send_q.unfinished_tasks == 0, "wait_for_save")

    def start_load_kv(self) -> None:
        """Start copying this step's loads into the local caches, layer by layer, as layers
        arrive (a background thread; ``wait_for_layer_load`` waits on it)."""
        if self.role != "consumer" or not self._meta.loads:
            return
        loads = list(self._meta.loads)
        with self._cv:
            for spec in loads:
                self._loaded_layers[spec.request_id] = 0
        self._load_thread = threading.Thread(target=self._load, args=(loads,), daemon=True)
        self._load_thread.start()

    def _load(self, loads: list[KVRequestSpec]) -> None:
        try:
            for layer in range(self.num_layers):
                for spec in loads:
                    rid = spec.request_id
                    self._wait(lambda r=rid, ly=layer: ly in self._staged[r].layers, "load")
                    with self._cv:
                        st = self._staged[rid]
                        payload, plan = st.layers.pop(layer), st.plans.pop(layer)
                    self.channel.write_blocks(plan, payload, list(spec.block_ids))
                    with self._cv:
                        self._loaded_layers[rid] = layer + 1
                        self._cv.notify_all()
        except BaseException as e:
            with self._cv:
                self._error = self._error or e
                self._cv.notify_all()

    def wait_for_layer_load(self, layer_id: int) -> None:
        if self.role != "consumer":
            return
        rids = [s.request_id for s in self._meta.loads]
        self._wait(
            lambda: all(self._loaded_layers.get(r, 0) > layer_id for r in rids),
            f"wait_for_layer_load({layer_id})",
        )

    def get_finished(
        self, finished_req_ids: set[str] | None = None
    ) -> tuple[set[str] | None, set[str] | None]:
        with self._cv:
            if self._error is not None:
                raise CommError(f"kv_connector: peer failed: {self._error}")
            if self.role == "producer":
                done = {
                    r
                    for r in self._finished_reqs | set(finished_req_ids or ())
                    if self._layers_sent.get(r, 0) >= self.num_layers
                }
                self._finished_reqs -= done
                for r in done:
                    self._layers_sent.pop(r, None)
                    self._saving.discard(r)
                return done, None
            done = {r for r, n in self._loaded_layers.items() if n >= self.num_layers}
            for r in done:
                del self._loaded_layers[r]
            return None, done

    def close(self) -> None:
        if self.role == "producer":
            self._send_q.put(None)
        self.channel.close()
        self._thread.join(timeout=self.timeout_s)
