"""The FastAPI app: OpenAI routes over one EngineLoop, /health, /metrics.

Errors are OpenAI-style bodies (see errors.py); a handler never lets an exception reach the
client as a crash, and the engine thread keeps serving whatever one request did.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from sagellm.core.errors import InvalidRequestError
from sagellm.core.protocol import BaseEngine
from sagellm.core.types import Request as EngineRequest
from sagellm.serve import inputs as build
from sagellm.serve import responses as resp
from sagellm.serve.config import ServeConfig
from sagellm.serve.engine_loop import EngineLoop
from sagellm.serve.errors import APIError
from sagellm.serve.metrics import ServeMetrics
from sagellm.serve.protocol import ChatCompletionRequest, CompletionRequest
from sagellm.serve.security import check_api_key, read_json_body


class _State:
    """What the routes share; only the event loop's thread touches ``num_inflight``."""

    def __init__(self, engine: BaseEngine, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.tokenizer = getattr(engine, "tokenizer", None)
        self.context_tokens: int = getattr(engine, "max_model_len", None) or 2048
        self.metrics = ServeMetrics(cfg.served_model_name)
        self.loop = EngineLoop(engine, self.metrics)
        self.num_inflight = 0


def create_app(engine: BaseEngine, cfg: ServeConfig) -> FastAPI:
    """The app serving ``engine``; its engine thread starts and stops with the app."""
    st = _State(engine, cfg)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        st.loop.start()
        yield
        st.loop.stop()

    app = FastAPI(
        title="sagellm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.serve = st

    @app.exception_handler(APIError)
    async def _api_error(_req: Request, err: APIError) -> JSONResponse:
        return err.response()

    _add_info_routes(app, st)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _generate(st, request, CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(st, request, ChatCompletionRequest)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST"])
    async def unknown(request: Request, rest: str) -> Response:
        check_api_key(request, cfg.api_key)
        raise APIError(404, f"no route /v1/{rest}")

    return app


def _add_info_routes(app: FastAPI, st: _State) -> None:
    """/health (always open), /metrics (open unless metrics_require_key), /v1/models."""
    cfg = st.cfg

    @app.get("/health")
    async def health() -> Response:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if cfg.metrics_require_key:
            check_api_key(request, cfg.api_key)
        return Response(st.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_api_key(request, cfg.api_key)
        card = {
            "id": cfg.served_model_name,
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sagellm",
            "max_model_len": st.context_tokens,
        }
        return {"object": "list", "data": [card]}


def _parse(model: type, raw: dict):
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"])
        param = str(e["loc"][0]) if e["loc"] else None  # the top-level field, as OpenAI names it
        raise APIError(400, f"{where or 'body'}: {e['msg']}", param) from None


async def _generate(st: _State, request: Request, model: type) -> Response:
    cfg = st.cfg
    check_api_key(request, cfg.api_key)
    body = _parse(model, await read_json_body(request, cfg.max_body_bytes))
    build.check_body(body, cfg)
    chat = isinstance(body, ChatCompletionRequest)
    if chat:
        ids = build.chat_prompt_ids(body, st.tokenizer)
    else:
        ids = build.completion_prompt_ids(body, st.tokenizer)
    sp = build.sampling_params(body, len(ids), cfg, st.context_tokens)
    if st.num_inflight >= cfg.max_concurrent_streams:
        raise APIError(
            429,
            f"{st.num_inflight} requests in flight; the limit is "
            f"{cfg.max_concurrent_streams} (--max-concurrent-streams)",
        )
    shape = resp.Shape.new(chat, cfg.served_model_name)
    req = EngineRequest(shape.request_id, ids, sp, tenant_id=body.user or "default")
    st.num_inflight += 1
    try:
        q = await st.loop.add(req)
    except BaseException as err:
        st.num_inflight -= 1
        if isinstance(err, InvalidRequestError):
            raise APIError(400, str(err)) from None
        raise
    done = _Release(st, req.request_id)
    if body.stream:
        chunks = resp.stream_chunks(shape, req, q, st.tokenizer, body)
        return _ReleasingStream(chunks, done, media_type="text/event-stream")
    try:
        out = await resp.collect(shape, req, q, st.tokenizer, body, request.is_disconnected)
        return JSONResponse(out)
    finally:
        done()


class _Release:
    """Once per request, however it ends (finished, client gone, cancelled, never started):
    abort it in the engine (a no-op once finished; frees its KV blocks otherwise) and give
    back its concurrency slot."""

    def __init__(self, st: _State, request_id: str) -> None:
        self.st, self.request_id, self.done = st, request_id, False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.st.num_inflight -= 1
            self.st.loop.abort(self.request_id)


class _ReleasingStream(StreamingResponse):
    """A StreamingResponse that releases its request when the response ends, including when
    the client left before the first chunk (then the body iterator never starts)."""

    def __init__(self, content: AsyncIterator[str], release: _Release, media_type: str) -> None:
        super().__init__(content, media_type=media_type)
        self.release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()
