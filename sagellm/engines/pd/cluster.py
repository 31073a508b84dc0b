"""``PDCluster``: prefill/decode disaggregation across processes, behind the engine surface.

::

    front (this process)          prefill process             decode process
    add_request ---("add")------> NativeEngine (PrefillOnly)
    step() <----(first token)---- prompt done: first token
                                  KV planes --connector (shm|tcp)--> staged (recv thread)
                                  request + tokens ---pipe--------> admitted when all arrived
    step() <----(next tokens)-------------------------------------- NativeEngine decodes

The front has the surface :class:`~sagellm.benchmarks.BenchmarkRunner` drives
(``add_request``, ``step``, ``has_unfinished``, ``abort``, ``request_metrics``,
``step_metrics``, ``reset_metrics``, ``clock``, ``vocab_size``), so a benchmark runs it in place
of one engine. ``step()`` blocks at most ``poll_s`` for worker output (no spinning) and returns
the outputs that arrived, each request's tokens in order (decode tokens that overtake the
prefill's first token are held back until it arrives).

Clock: every timestamp (the front's ``arrival_s``, both workers' token times) is
``time.perf_counter()``, CLOCK_MONOTONIC on Linux: one system-wide clock, so TTFT and TPOT
mix timestamps of different processes soundly.

Faults: a worker that dies (killed, crashed) is seen at once through its process sentinel; a
worker that reports an error, or stays silent ``timeout_s`` with requests in flight, too. Then
``step`` raises :class:`PDWorkerError` naming the worker, its exit code and the requests in
flight, after :meth:`close` has stopped the other worker (stop, then terminate, then kill; KV
shm segments are unlinked once both sides mapped them, so none is left).
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import replace
from multiprocessing import get_context
from multiprocessing.connection import wait

from sagellm.comm_backend import CommPeerLostError
from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request, RequestId, RequestMetrics, RequestOutput, StepMetrics
from sagellm.engines.native.request_check import check_blocks, check_request, context_tokens
from sagellm.engines.pd.config import PDClusterConfig
from sagellm.engines.pd.worker import worker_main

ROLES = ("prefill", "decode")
STOP_GRACE_S = 10.0  # a stopped worker gets this long to exit before terminate, then kill
EXIT_GRACE_S = 2.0  # after a worker's pipe closed, wait this long for its exit code


class PDWorkerError(CommPeerLostError):
    """A worker process of a :class:`PDCluster` died, failed or went silent; the cluster is
    closed (both workers stopped) when this is raised."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PDCluster:
    """A prefill process and a decode process, each a native engine (see the module
    docstring). ``with PDCluster(cfg) as pd: ...`` closes both on exit."""

    capabilities = frozenset({"pd_separation", "scheduler_ir", "streaming", "abort"})
    device = "cpu"

    def __init__(self, config: PDClusterConfig) -> None:
        self.config = config
        self._closed = False
        self._inflight: dict[RequestId, Request] = {}
        self._tokens: dict[RequestId, list[int]] = {}
        self._early: dict[RequestId, list[RequestOutput]] = {}  # decode ahead of first token
        self._metrics: dict[RequestId, RequestMetrics] = {}
        self._steps: dict[str, list[StepMetrics]] = {r: [] for r in ROLES}
        self._ready_outputs: list[RequestOutput] = []
        ctx = get_context("spawn")
        port = _free_port()
        peer_p, peer_d = ctx.Pipe()
        self._ctrl, self._procs = {}, {}
        for role, peer in zip(ROLES, (peer_p, peer_d), strict=True):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(role, config, theirs, peer, port),
                name=f"sagellm-pd-{role}", daemon=True,
            )  # fmt: skip
            proc.start()
            theirs.close()  # so a dead worker reads as EOF here
            self._ctrl[role], self._procs[role] = mine, proc
        peer_p.close()
        peer_d.close()
        self.info = self._await_ready()
        self.vocab_size = int(self.info["prefill"]["vocab_size"])
        self._last_heard_s = self.clock()

    def _await_ready(self) -> dict[str, dict]:
        info: dict[str, dict] = {}
        deadline = time.monotonic() + self.config.startup_timeout_s
        while len(info) < len(ROLES):
            left = deadline - time.monotonic()
            if left <= 0:
                self._fail(
                    f"workers not ready in {self.config.startup_timeout_s}s (startup_timeout_s)"
                )
            self._wait(left)
            for role in ROLES:
                if role not in info and self._ctrl[role].poll():
                    msg = self._recv(role)
                    if msg[0] != "ready":
                        self._fail(f"{role} worker sent {msg[0]!r} before 'ready'")
                    info[role] = msg[1]
            self._check_alive()
        return info

    # ------------------------------------------------------------------ engine surface

    def clock(self) -> float:
        """Seconds, ``time.perf_counter()`` (the clock of every timestamp; see the module)."""
        return time.perf_counter()

    def add_request(self, request: Request) -> None:
        """Validate (InvalidRequestError) and send ``request`` to the prefill process;
        ``arrival_s`` is stamped here when None."""
        self._check_open()
        self._validate(request)
        if request.arrival_s is None:
            request = replace(request, arrival_s=self.clock())
        if not self._inflight:
            self._last_heard_s = self.clock()
        self._inflight[request.request_id] = request
        self._tokens[request.request_id] = []
        self._ctrl["prefill"].send(("add", request))

    def _validate(self, request: Request) -> None:
        """The native engine's admission rules (``request_check``) against each worker's
        limits, so a bad request fails here, at once, instead of in a worker."""
        rid = request.request_id
        if rid in self._inflight or rid in self._metrics:
            raise InvalidRequestError(f"request_id {rid!r} is already in use")
        limits = [self.info[role] for role in ROLES]
        check_request(  # once, against the tighter worker
            request,
            vocab_size=min(i["vocab_size"] for i in limits),
            max_model_len_tokens=min(i["max_model_len_tokens"] for i in limits),
        )
        for role, i in zip(ROLES, limits, strict=True):
            total = context_tokens(request, i["max_model_len_tokens"])
            need = -(-total // i["block_size_tokens"])
            check_blocks(request, need, i["num_kv_blocks"], total, f"the {role} pool")

    def abort(self, request_id: RequestId) -> bool:
        """Stop a request on whichever side holds it; its final output (finish_reason
        "abort") comes with the next ``step``."""
        req = self._inflight.pop(request_id, None)
        if req is None or self._closed:
            return False
        for role in ROLES:
            self._ctrl[role].send(("abort", request_id))
        now = self.clock()
        self._metrics[request_id] = RequestMetrics(
            request_id, req.arrival_s or now, len(req.prompt_token_ids), finished_s=now,
            finish_reason="abort",
        )  # fmt: skip
        self._early.pop(request_id, None)
        self._ready_outputs.append(RequestOutput(request_id, [], True, "abort"))
        return True

    def has_unfinished(self) -> bool:
        return bool(self._inflight or self._ready_outputs)

    def step(self) -> list[RequestOutput]:
        """Outputs that arrived within ``poll_s`` (all that are there, without waiting, when
        nothing is in flight). Raises PDWorkerError when a worker died, failed or went
        silent for ``timeout_s`` with requests in flight."""
        self._check_open()
        outs, self._ready_outputs = self._ready_outputs, []
        self._wait(self.config.poll_s if self._inflight and not outs else 0.0)
        for role in ROLES:  # prefill first: a request's first token before its decode tokens
            while self._ctrl[role].poll():
                outs.extend(self._handle(role, self._recv(role)))
        self._check_alive()
        silent_s = self.clock() - self._last_heard_s
        if self._inflight and silent_s > self.config.timeout_s:
            self._fail(f"no worker output for {silent_s:.1f}s (timeout_s={self.config.timeout_s})")
        return outs

    def _handle(self, role: str, msg: tuple) -> list[RequestOutput]:
        self._last_heard_s = self.clock()
        if msg[0] == "error":
            self._check_alive()  # a dead peer is the cause: name it first
            self._fail(msg[1])
        _, _, outs, steps, metrics = msg
        self._steps[role].extend(steps)
        for m in metrics:
            if m.request_id in self._inflight:
                self._metrics[m.request_id] = m
        got: list[RequestOutput] = []
        for o in outs:
            rid = o.request_id
            if rid not in self._inflight:
                continue  # aborted here already
            toks = self._tokens[rid]
            if role == "decode" and not toks:
                self._early.setdefault(rid, []).append(o)
                continue
            for x in [o, *(self._early.pop(rid, []) if role == "prefill" else [])]:
                toks.extend(x.new_token_ids)
                got.append(x)
                if x.finished:
                    self._inflight.pop(rid, None)
        return got

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        return list(self._tokens[request_id])

    def request_metrics(self) -> list[RequestMetrics]:
        """Metrics of the finished requests (timestamps of both processes on one clock)."""
        return list(self._metrics.values())

    def step_metrics(self) -> list[StepMetrics]:
        """Both workers' steps, by start time (they overlap: two processes)."""
        return sorted([*self._steps["prefill"], *self._steps["decode"]], key=lambda s: s.start_s)

    def role_step_metrics(self, role: str) -> list[StepMetrics]:
        """The steps of one worker ("prefill" or "decode")."""
        return list(self._steps[role])

    def reset_metrics(self) -> None:
        """Forget finished requests and past steps."""
        for rid in list(self._metrics):
            if rid not in self._inflight:
                del self._metrics[rid]
                self._tokens.pop(rid, None)
        for s in self._steps.values():
            s.clear()

    def stats(self) -> dict[str, float]:
        return {
            "num_in_flight": float(len(self._inflight)),
            **{f"{r}_num_steps": float(len(self._steps[r])) for r in ROLES},
        }

    # ------------------------------------------------------------------ processes

    def pids(self) -> dict[str, int]:
        """Process id of each worker."""
        return {r: int(p.pid) for r, p in self._procs.items()}

    def _wait(self, timeout_s: float) -> None:
        wait([*self._ctrl.values(), *(p.sentinel for p in self._procs.values())], timeout_s)

    def _recv(self, role: str) -> tuple:
        try:
            return self._ctrl[role].recv()
        except (EOFError, OSError):
            # its pipe closes just before it can be reaped: give the exit code a moment
            self._procs[role].join(EXIT_GRACE_S)
            self._check_alive()
            self._fail(f"{role} worker closed its pipe")
            raise  # unreachable: _fail raises

    def _check_alive(self) -> None:
        for role, p in self._procs.items():
            if not p.is_alive():
                while self._ctrl[role].poll():  # its last words, when it managed to send them
                    try:
                        msg = self._ctrl[role].recv()
                    except (EOFError, OSError):
                        break
                    if msg[0] == "error":
                        self._fail(msg[1])
                self._fail(f"{role} worker (pid {p.pid}) exited with code {p.exitcode}")

    def _check_open(self) -> None:
        if self._closed:
            raise PDWorkerError("pd cluster is closed")

    def _fail(self, why: str) -> None:
        inflight = sorted(self._inflight)
        self.close()
        raise PDWorkerError(
            f"pd cluster failed: {why}; {len(inflight)} requests in flight {inflight[:5]}"
        )

    def close(self) -> None:
        """Stop both workers (stop message, then terminate, then kill); idempotent."""
        if self._closed:
            return
        self._closed = True
        for c in self._ctrl.values():
            with contextlib.suppress(OSError, ValueError):  # that worker is gone already
                c.send(("stop",))
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self._procs.values():
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for c in self._ctrl.values():
            c.close()

    def __enter__(self) -> PDCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()
