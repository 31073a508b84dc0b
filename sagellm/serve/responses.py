"""From engine deltas to OpenAI responses: one JSON body, or SSE chunks ``data: {...}\n\n``
ending with ``data: [DONE]`` (a last usage chunk first when ``stream_options.include_usage``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sagellm.core.types import Request, RequestOutput
from sagellm.engines.native.tokenizer import Tokenizer
from sagellm.serve.detokenize import IncrementalDecoder
from sagellm.serve.errors import APIError
from sagellm.serve.inputs import Body


@dataclass
class Shape:
    """What differs between the two endpoints' responses."""

    chat: bool
    request_id: str
    model: str
    created: int

    @classmethod
    def new(cls, chat: bool, model: str) -> Shape:
        prefix = "chatcmpl-" if chat else "cmpl-"
        return cls(chat, prefix + uuid.uuid4().hex, model, int(time.time()))

    def envelope(self, choices: list[dict], usage: dict | None, stream: bool) -> dict:
        kind = "chat.completion" if self.chat else "text_completion"
        obj = kind + ".chunk" if stream and self.chat else kind
        return {
            "id": self.request_id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def choice(
        self,
        text: str,
        reason: str | None,
        ids: list[int] | None,
        stream: bool,
        first: bool = False,
    ) -> dict:
        c: dict = {"index": 0, "finish_reason": reason}
        if not self.chat:
            c.update(text=text, logprobs=None)
        elif stream:
            c["delta"] = {"role": "assistant", "content": text} if first else {"content": text}
        else:
            c["message"] = {"role": "assistant", "content": text}
        if ids is not None:
            c["token_ids"] = ids
        return c


def usage(num_prompt: int, num_output: int, num_cached: int) -> dict:
    return {
        "prompt_tokens": num_prompt,
        "completion_tokens": num_output,
        "total_tokens": num_prompt + num_output,
        "prompt_tokens_details": {"cached_tokens": num_cached},
    }


def finish_reason(out: RequestOutput) -> str:
    if out.finish_reason == "error":
        raise APIError(500, f"generation failed: {out.error}")
    return out.finish_reason or "stop"


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def stream_chunks(
    shape: Shape,
    req: Request,
    q,
    tok: Tokenizer | None,
    body: Body,
) -> AsyncIterator[str]:
    """SSE chunks for one request: a chunk per engine delta, then usage (if asked), [DONE]."""
    dec = IncrementalDecoder(tok) if tok is not None else None
    n_out = 0
    want_ids = body.return_token_ids
    first = True
    while True:
        out: RequestOutput = await q.get()
        n_out += len(out.new_token_ids)
        if out.finish_reason == "error":
            yield sse(APIError(500, f"generation failed: {out.error}").body())
            break
        text = dec.push(out.new_token_ids, final=out.finished) if dec else ""
        reason = out.finish_reason if out.finished else None
        if out.new_token_ids or out.finished:
            ids = list(out.new_token_ids) if want_ids else None
            choice = shape.choice(text, reason, ids, stream=True, first=first)
            first = False
            yield sse(shape.envelope([choice], None, stream=True))
        if out.finished:
            if body.stream_options is not None and body.stream_options.include_usage:
                u = usage(len(req.prompt_token_ids), n_out, out.num_cached_tokens)
                yield sse(shape.envelope([], u, stream=True))
            break
    yield sse("[DONE]")


async def collect(
    shape: Shape,
    req: Request,
    q,
    tok: Tokenizer | None,
    body: Body,
    is_disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = 1.0,
) -> dict:
    """The whole response of a non-streamed request; stops early (the caller aborts the
    request) when ``is_disconnected`` says the client left."""
    ids: list[int] = []
    clock = asyncio.get_running_loop().time
    checked_s = clock()
    while True:
        try:
            out: RequestOutput | None = await asyncio.wait_for(q.get(), poll_s)
        except asyncio.TimeoutError:
            out = None
        if clock() - checked_s >= poll_s:  # deltas may come faster than poll_s: check by time
            checked_s = clock()
            if await is_disconnected():
                raise APIError(499, "client closed the request")
        if out is None:
            continue
        ids.extend(out.new_token_ids)
        if out.finished:
            break
    reason = finish_reason(out)
    text = tok.decode(ids) if tok is not None else ""
    choice = shape.choice(text, reason, ids if body.return_token_ids else None, stream=False)
    u = usage(len(req.prompt_token_ids), len(ids), out.num_cached_tokens)
    return shape.envelope([choice], u, stream=False)
