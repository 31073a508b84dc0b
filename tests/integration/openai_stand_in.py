"""A minimal OpenAI /v1/completions server for client tests: a Starlette app on uvicorn (in a
thread, on 127.0.0.1) streaming the real tokens of an in-process NativeEngine. Each token's text
is its id in brackets (the tiny checkpoints have no tokenizer). It is the client's stand-in for
``sagellm serve``, not a second server: no validation beyond what the tests need."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time

from sagellm.core.types import Request, SamplingParams

_IDS = itertools.count()  # request ids stay unique across stand-ins sharing one engine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StandIn:
    """``with StandIn(engine, "tiny") as base_url: ...``; ``stall_s`` delays every stream's
    first chunk (to exercise client timeouts)."""

    def __init__(self, engine, model: str, stall_s: float = 0.0) -> None:
        self.engine, self.model, self.stall_s = engine, model, stall_s
        self.lock = threading.Lock()
        self.streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.running = True
        self.prompts: list[list[int]] = []  # what the client sent, in order

    def _engine_loop(self) -> None:
        while self.running:
            with self.lock:
                outs = self.engine.step() if self.engine.has_unfinished() else []
            for o in outs:
                loop, q = self.streams[o.request_id]
                loop.call_soon_threadsafe(q.put_nowait, o)
            if not outs:
                time.sleep(0.001)

    def app(self):
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, StreamingResponse
        from starlette.routing import Route

        async def models(_request):
            return JSONResponse({"object": "list", "data": [{"id": self.model}]})

        async def completions(request):
            body = await request.json()
            if body.get("model") != self.model:
                return JSONResponse({"error": {"message": "unknown model"}}, status_code=404)
            rid = f"cmpl-{next(_IDS)}"
            q: asyncio.Queue = asyncio.Queue()
            self.streams[rid] = (asyncio.get_running_loop(), q)
            self.prompts.append(body["prompt"])
            sp = SamplingParams(max_tokens=body["max_tokens"], ignore_eos=body["ignore_eos"])
            with self.lock:
                self.engine.add_request(Request(rid, body["prompt"], sp))
            return StreamingResponse(
                self._sse(rid, q, len(body["prompt"])), media_type="text/event-stream"
            )

        return Starlette(
            routes=[
                Route("/v1/models", models),
                Route("/v1/completions", completions, methods=["POST"]),
            ]
        )

    async def _sse(self, rid: str, q: asyncio.Queue, num_prompt: int):
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        n = 0
        while True:
            o = await q.get()
            n += len(o.new_token_ids)
            text = "".join(f"[{t}]" for t in o.new_token_ids)
            choice = {"index": 0, "text": text, "finish_reason": o.finish_reason}
            yield f"data: {json.dumps({'id': rid, 'choices': [choice]})}\n\n"
            if o.finished:
                break
        usage = {"prompt_tokens": num_prompt, "completion_tokens": n}
        yield f"data: {json.dumps({'id': rid, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    def __enter__(self) -> str:
        import uvicorn

        port = free_port()
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.threads = [
            threading.Thread(target=self.server.run, daemon=True),
            threading.Thread(target=self._engine_loop, daemon=True),
        ]
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the stand-in server did not start in 20 s")
            time.sleep(0.02)
        return f"http://127.0.0.1:{port}/v1"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.running = False
        for t in self.threads:
            t.join(timeout=10)
