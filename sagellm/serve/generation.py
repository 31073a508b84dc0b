"""From a validated body to engine tokens and back: prompt ids, SamplingParams, and the
response (one JSON body, or SSE chunks ``data: {...}\\n\\n`` ending with ``data: [DONE]``)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sagellm.core.types import Request, RequestOutput, SamplingParams
from sagellm.engines.native.tokenizer import Tokenizer
from sagellm.serve.config import ServeConfig
from sagellm.serve.detokenize import IncrementalDecoder
from sagellm.serve.errors import APIError
from sagellm.serve.protocol import ChatCompletionRequest, CompletionRequest

_Body = CompletionRequest | ChatCompletionRequest


def check_body(body: _Body, cfg: ServeConfig) -> None:
    """Reject what is out of limits or not implemented, naming the field (400/404)."""
    if body.model is not None and body.model != cfg.served_model_name:
        raise APIError(
            404, f"model {body.model!r} does not exist; served: {cfg.served_model_name!r}", "model"
        )
    if body.n < 1 or body.n > cfg.max_n:
        raise APIError(400, f"n must be between 1 and {cfg.max_n}, got {body.n}", "n")
    if body.stop:
        raise APIError(400, "stop strings are not supported; use stop_token_ids", "stop")
    if body.logprobs not in (None, False):
        raise APIError(400, "logprobs are not supported", "logprobs")
    if isinstance(body, CompletionRequest) and body.echo:
        raise APIError(400, "echo is not supported", "echo")


def completion_prompt_ids(body: CompletionRequest, tok: Tokenizer | None) -> list[int]:
    """A single prompt (text, token ids, or a one-element list of either); no chat template."""
    p = body.prompt
    if isinstance(p, list) and p and isinstance(p[0], (str, list)):
        if len(p) != 1:
            raise APIError(400, f"one prompt per request is supported, got {len(p)}", "prompt")
        p = p[0]
    if isinstance(p, list):
        return list(p)
    if tok is None:
        raise APIError(400, "this model has no tokenizer; send token ids", "prompt")
    return tok.encode(p)


def chat_prompt_ids(body: ChatCompletionRequest, tok: Tokenizer | None) -> list[int]:
    if tok is None or not tok.has_chat_template:
        raise APIError(400, "this model has no chat template; use /v1/completions", "messages")
    msgs = []
    for m in body.messages:
        content = m.content
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
        msgs.append({"role": m.role, "content": content or ""})
    return tok.encode_messages(msgs)


def sampling_params(body: _Body, num_prompt_tokens: int, cfg: ServeConfig, context: int):
    """SamplingParams for ``body``; 400 naming the field when a value is out of range."""
    max_tokens = body.max_tokens
    if isinstance(body, ChatCompletionRequest) and body.max_completion_tokens is not None:
        max_tokens = body.max_completion_tokens
    if max_tokens is None:
        room = max(1, context - num_prompt_tokens)
        chat = isinstance(body, ChatCompletionRequest)
        max_tokens = min(cfg.max_tokens_limit, room) if chat else cfg.default_max_tokens
    if max_tokens < 1 or max_tokens > cfg.max_tokens_limit:
        raise APIError(
            400,
            f"max_tokens must be between 1 and {cfg.max_tokens_limit}, got {max_tokens}",
            "max_tokens",
        )
    limit = min(cfg.max_prompt_tokens or context, context - 1)
    if num_prompt_tokens > limit:
        raise APIError(
            400,
            f"prompt has {num_prompt_tokens} tokens; at most {limit} are allowed here",
            "prompt" if isinstance(body, CompletionRequest) else "messages",
        )
    top_k = body.top_k if body.top_k is not None and body.top_k > 0 else None
    sp = SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=top_k,
        seed=body.seed,
        stop_token_ids=tuple(body.stop_token_ids or ()),
        ignore_eos=body.ignore_eos,
    )
    try:
        sp.validate()
    except ValueError as err:
        raise APIError(400, str(err), str(err).split()[0].removeprefix("sampling.")) from None
    return sp


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
    body: _Body,
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
    body: _Body,
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
