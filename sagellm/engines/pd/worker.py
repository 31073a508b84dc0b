"""The two worker processes of a :class:`~sagellm.engines.pd.PDCluster`.

Each process runs one :class:`NativeEngine` on the one engine path (every step is its
strategy's plan) with its own torch threads, so the decode process steps while the prefill
process computes a long prompt: a decode step never waits behind a prefill.

Prefill process (strategy wrapped in :class:`PrefillOnly`): computes prompts, samples each
request's first token (reported to the front at once), then hands the request off:
``ChannelKVConnector("producer")`` saves every KV plane of the request's prompt blocks (the
connector's send thread moves them while the next prefill runs) and the request with its
tokens and timestamps goes to the decode process over a pipe. The prompt's blocks stay
referenced until ``get_finished`` reports them sent, then return to the pool (and the prefix
cache, when on).

Decode process: a request is admitted once all its KV planes arrived (staged in host memory by
the consumer connector's receive thread, off the step path): blocks are allocated in its own
pool, the connector loads the planes into them, and the request joins the running batch with
``num_computed_tokens == prompt length`` and its first token as the next input; it then decodes
to the end. Admission is FIFO and waits (never fails) while the pool lacks blocks.

KV planes: the engine cache ``kv[layer, K|V, block, kv_head, slot, width]`` is exposed as
``2 * num_layers`` block-major views (``planes[2*l]`` = K of layer l, ``planes[2*l+1]`` = V),
which the :class:`KVTransferChannel` gathers from and scatters into without a staging copy of
the whole pool. Bytes move unchanged (int8 KV rows with their scales included).

Messages (pickled over ``multiprocessing`` pipes), front -> worker: ``("add", Request)``,
``("abort", id)``, ``("stop",)``; worker -> front: ``("ready", info)``,
``("out", role, outputs, step_metrics, finished_request_metrics)``, ``("error", text)``;
prefill -> decode: ``("handoff", Request, token_ids, RequestMetrics)``. Timestamps are
``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: one clock for every process of the host).
"""

from __future__ import annotations

import contextlib
import os
import traceback
from multiprocessing.connection import Connection, wait

import torch

from sagellm.comm_backend import ChannelKVConnector, open_kv_channel
from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request, RequestMetrics, RequestOutput
from sagellm.engines.native.engine import NativeEngine
from sagellm.engines.native.kv_manager import AllocStatus
from sagellm.engines.native.sequence import SeqStatus, Sequence
from sagellm.engines.pd.config import PDClusterConfig
from sagellm.scheduler_ir.pd_runtime import PrefillOnly

# The KV channel waits this long for the next transfer while idle (s). A dead peer is seen at
# once (its socket closes); a live but silent worker is the front's ``timeout_s`` to catch.
KV_IDLE_LIMIT_S = 24 * 3600.0
IDLE_POLL_S = 0.05  # a worker with nothing to do waits this long for a message (s)
STAGED_POLL_S = 0.001  # decode: re-check for fully arrived KV this often while idle (s)


def kv_planes(engine: NativeEngine) -> list[torch.Tensor]:
    """The engine's KV cache as ``2 * num_layers`` block-major views (no copy)."""
    kv = engine.cache.kv
    return [kv[layer, half] for layer in range(kv.shape[0]) for half in (0, 1)]


def worker_main(
    role: str, cfg: PDClusterConfig, ctrl: Connection, peer: Connection, port: int
) -> None:
    """Process entry point of one side (``role`` "prefill" or "decode"); exits 1 on error
    after sending ``("error", text)`` to the front."""
    try:
        _serve(role, cfg, ctrl, peer, port)
    except BaseException as e:  # every failure reaches the front as text, then exit
        with contextlib.suppress(Exception):
            tb = traceback.format_exc(limit=6)
            ctrl.send(("error", f"{role} worker: {type(e).__name__}: {e}\n{tb}"))
        raise SystemExit(1) from None


def _serve(role: str, cfg: PDClusterConfig, ctrl: Connection, peer: Connection, port: int):
    engine = NativeEngine(cfg.side(role))
    engine.instance_id = f"{role}-0"
    planes = kv_planes(engine)
    channel = open_kv_channel(
        role, planes, transport=cfg.transport, listen=role == "decode", port=port,
        timeout_s=KV_IDLE_LIMIT_S,
    )  # fmt: skip
    kv_role = "producer" if role == "prefill" else "consumer"
    other = "decode" if role == "prefill" else "prefill"
    conn = ChannelKVConnector(kv_role, channel, other, timeout_s=cfg.timeout_s)
    ctrl.send(("ready", {
        "pid": os.getpid(),
        "vocab_size": engine.arch.vocab_size,
        "max_model_len_tokens": engine.max_model_len,
        "num_kv_blocks": engine.kv.num_blocks,
        "block_size_tokens": engine.config.block_size_tokens,
        "kv_bytes_per_token": engine.kv_bytes_per_token,
    }))  # fmt: skip
    try:
        if role == "prefill":
            engine.strategy = PrefillOnly(engine.strategy)
            _PrefillLoop(engine, conn, planes, ctrl, peer).run()
        else:
            _DecodeLoop(engine, conn, planes, ctrl, peer).run()
    finally:
        conn.close()
        engine.close()


class _Loop:
    """What both sides share: reading front messages and reporting step results."""

    def __init__(self, engine, conn, planes, ctrl: Connection, peer: Connection) -> None:
        self.engine, self.conn, self.planes = engine, conn, planes
        self.ctrl, self.peer = ctrl, peer
        self.role = engine.instance_id.split("-")[0]

    def handle(self, msg: tuple) -> bool:
        """One front message; False = stop."""
        kind = msg[0]
        if kind == "stop":
            return False
        if kind == "add":
            try:
                self.engine.add_request(msg[1])
            except InvalidRequestError as e:
                self.report([RequestOutput(msg[1].request_id, [], True, "error", error=str(e))])
        elif kind == "abort":
            self.abort(msg[1])
        return True

    def abort(self, request_id: str) -> None:
        self.engine.abort(request_id)

    def read(self, timeout_s: float) -> bool:
        """Handle the messages that arrive within ``timeout_s``; False = stop (or the front's
        end of the pipe closed: the front is gone)."""
        for c in wait([self.ctrl, self.peer], timeout_s):
            try:
                while c.poll():
                    msg = c.recv()
                    if not (self.handle(msg) if c is self.ctrl else self.on_peer(msg)):
                        return False
            except EOFError:
                return False
        return True

    def on_peer(self, msg: tuple) -> bool:
        return True

    def report(self, outs: list[RequestOutput]) -> None:
        """Send the step's outputs, new step metrics and finished requests' metrics; then
        forget them here (``reset_metrics``), so a long run keeps no history in the worker."""
        steps = self.engine.step_metrics()
        if not outs and not steps:
            return
        done = {o.request_id for o in outs if o.finished}
        ms = [m for m in self.engine.request_metrics() if m.request_id in done]
        self.ctrl.send(("out", self.role, outs, steps, ms))
        self.engine.reset_metrics()


class _PrefillLoop(_Loop):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.sending: dict[str, Sequence] = {}  # handed off, blocks held until sent

    def run(self) -> None:
        while True:
            busy = self.engine.has_unfinished()
            if not self.read(0.0 if busy else STAGED_POLL_S if self.sending else IDLE_POLL_S):
                return
            sent, _ = self.conn.get_finished()  # raises CommError when the decode side died
            for rid in sent:
                self.engine.kv.free(self.sending.pop(rid))
            if not self.engine.has_unfinished():
                continue
            outs = self.engine.step()
            self.report(outs)  # first tokens reach the front before the decode side has them
            self.hand_off()

    def hand_off(self) -> None:
        eng = self.engine
        ready = [s for s in eng.queues.running if s.num_computed_tokens >= s.num_prompt_tokens]
        if not ready:
            return
        bs = eng.config.block_size_tokens
        for seq in ready:
            n = seq.num_computed_tokens
            blocks = list(seq.block_ids[: -(-n // bs)])
            self.conn.update_state_after_alloc(seq.request_id, blocks, 0, num_prompt_tokens=n)
        self.conn.bind_connector_metadata(self.conn.build_connector_meta())
        for i, plane in enumerate(self.planes):
            self.conn.save_kv_layer(i, plane)  # queued: the send thread moves them
        for seq in ready:
            eng.queues.running.remove(seq)  # off the engine's path; blocks held until sent
            seq.status = SeqStatus.FINISHED  # handed off: no further output here
            self.sending[seq.request_id] = seq
            self.conn.request_finished(seq.request_id, list(seq.block_ids))
            self.peer.send(("handoff", seq.request, list(seq.token_ids), seq.metrics))


class _DecodeLoop(_Loop):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        # handed off, waiting for all KV planes (and free blocks); FIFO
        self.pending: dict[str, tuple[Request, list[int], RequestMetrics]] = {}
        self.aborted: set[str] = set()  # aborted before their handoff arrived

    def run(self) -> None:
        while True:
            busy = self.engine.has_unfinished()
            if not self.read(0.0 if busy else STAGED_POLL_S if self.pending else IDLE_POLL_S):
                return
            self.conn.get_finished()  # raises CommError when the prefill side died
            self.admit()
            if self.engine.has_unfinished():
                self.report(self.engine.step())

    def on_peer(self, msg: tuple) -> bool:
        _, request, token_ids, metrics = msg
        rid = request.request_id
        if rid in self.aborted:
            self.aborted.discard(rid)
            self.conn.request_finished(rid, [])  # drop what of its KV is staged
        else:
            self.pending[rid] = (request, token_ids, metrics)
        return True

    def abort(self, request_id: str) -> None:
        if self.pending.pop(request_id, None) is not None:
            self.conn.request_finished(request_id, [])  # drop what of its KV is staged
            return
        if not self.engine.abort(request_id):
            self.aborted.add(request_id)

    def admit(self) -> None:
        eng, n_planes = self.engine, len(self.planes)
        bs = eng.config.block_size_tokens
        for rid, (request, token_ids, m) in list(self.pending.items()):
            if self.conn.num_arrived_layers(rid) < n_planes:
                continue  # still on the wire: the running batch goes on without it
            n = len(token_ids) - 1  # prompt tokens with KV; the first token is the next input
            nb = -(-n // bs)
            if eng.kv.num_available_blocks < nb or not eng.kv.quota.can_charge(
                request.tenant_id, nb
            ):
                return  # FIFO: wait for blocks
            del self.pending[rid]
            try:
                eng.add_request(request)
            except InvalidRequestError as e:
                self.conn.request_finished(rid, [])
                self.report([RequestOutput(rid, [], True, "error", error=str(e))])
                continue
            self.load(eng.queues.waiting[-1], n, nb, token_ids, m)

    def load(self, seq: Sequence, n: int, nb: int, token_ids: list[int], m: RequestMetrics):
        """Allocate ``nb`` blocks, load the staged KV into them, start the request as running
        with ``n`` tokens computed (the same step: the strategy never sees it waiting)."""
        eng, conn = self.engine, self.conn
        status = eng.kv.allocate(seq, nb)
        if status is not AllocStatus.OK:
            raise RuntimeError(f"request {seq.request_id!r}: {status.value} after a check")
        conn.update_state_after_alloc(seq.request_id, list(seq.block_ids), n)
        conn.bind_connector_metadata(conn.build_connector_meta())
        conn.start_load_kv()
        for i in range(len(self.planes)):
            conn.wait_for_layer_load(i)
        conn.get_finished()
        conn.request_finished(seq.request_id, [])  # staging dropped
        seq.token_ids = list(token_ids)
        seq.num_computed_tokens = n
        eng.queues.start(seq)
        dm = seq.metrics  # timestamps carry over: one clock for the host
        dm.arrival_s, dm.scheduled_s, dm.first_token_s = m.arrival_s, m.scheduled_s, m.first_token_s
        dm.token_times_s = list(m.token_times_s)
        dm.num_output_tokens = m.num_output_tokens
        dm.num_cached_tokens, dm.preemptions = m.num_cached_tokens, m.preemptions
