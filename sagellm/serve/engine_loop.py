"""The one thread that owns the engine: every connection's request is added to it and batched
by its steps (continuous batching across connections); each client awaits its own queue.

```
  HTTP handlers (event loop)          engine thread (owns the engine)
  add(req) ──► commands ──────────►   add_request / abort
  await queue ◄── call_soon_threadsafe ◄── step() -> RequestOutput deltas
```
No other code calls the engine: it is never used from two threads at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from dataclasses import dataclass

from sagellm.core.protocol import BaseEngine
from sagellm.core.types import Request, RequestId, RequestOutput
from sagellm.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[RequestOutput]


class EngineLoop:
    """Runs ``engine.step()`` while work is unfinished; idles on the command queue otherwise."""

    def __init__(self, engine: BaseEngine, metrics: ServeMetrics, idle_poll_s: float = 0.1):
        self.engine = engine
        self.metrics = metrics
        self.idle_poll_s = idle_poll_s
        self._commands: queue.Queue[tuple] = queue.Queue()
        self._streams: dict[RequestId, _Stream] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sagellm-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    async def add(self, request: Request) -> asyncio.Queue[RequestOutput]:
        """Queue ``request``; return the queue its deltas arrive on (the last one has
        ``finished``). Raises the engine's InvalidRequestError for a request it refuses."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        self._commands.put(("add", request, stream, fut))
        await asyncio.wrap_future(fut)
        return stream.queue

    def abort(self, request_id: RequestId) -> None:
        """Ask the engine to stop ``request_id`` (frees its KV blocks); safe from any thread."""
        self._commands.put(("abort", request_id, None, None))

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._commands.get(timeout=self.idle_poll_s) if block else None
        except queue.Empty:
            return
        while True:
            if cmd is None:
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    return
            self._apply(*cmd)
            cmd = None

    def _apply(self, kind: str, arg, stream: _Stream | None, fut) -> None:
        if kind == "abort":
            if arg in self._streams:
                self.engine.abort(arg)
            return
        try:
            self.engine.add_request(arg)
        except Exception as err:  # refused (InvalidRequestError): the caller gets it
            fut.set_exception(err)
            return
        self._streams[arg.request_id] = stream
        self.metrics.on_added(len(arg.prompt_token_ids))
        fut.set_result(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._iterate()
            except Exception:  # the thread must outlive any one bad iteration
                log.exception("engine loop iteration failed")

    def _iterate(self) -> None:
        """Apply pending adds/aborts (waiting for one when idle), then one step."""
        self._drain(block=not self.engine.has_unfinished())
        if not self.engine.has_unfinished():
            self.metrics.on_step(self.engine.stats())
            return
        try:
            outputs = self.engine.step()
        except Exception as err:  # a broken step must not hang every client
            log.exception("engine step failed; failing the requests in flight")
            outputs = self._fail_all(err)
        self._dispatch(outputs)
        self.metrics.on_step(self.engine.stats())

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        finished = [o.request_id for o in outputs if o.finished]
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is not None:
                stream.loop.call_soon_threadsafe(stream.queue.put_nowait, out)
        if finished:
            done = set(finished)
            for m in self.engine.request_metrics():
                if m.request_id in done:
                    self.metrics.on_finished(m)
            for rid in finished:
                self._streams.pop(rid, None)
            self.engine.reset_metrics()  # finished requests' state would grow without bound

    def _fail_all(self, err: Exception) -> list[RequestOutput]:
        for rid in list(self._streams):
            self.engine.abort(rid)
        try:
            self.engine.step()  # flush the aborts so their blocks are freed
        except Exception:
            log.exception("engine step after a failure also failed")
        msg = f"engine step failed: {err}"
        return [RequestOutput(rid, [], True, "error", error=msg) for rid in list(self._streams)]
