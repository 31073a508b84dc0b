"""From a validated request body to what the engine takes: prompt token ids (chat template
for chat) and SamplingParams, with every limit checked first (400/404 naming the field)."""

from __future__ import annotations

from sagellm.core.types import SamplingParams
from sagellm.engines.native.tokenizer import Tokenizer
from sagellm.serve.config import ServeConfig
from sagellm.serve.errors import APIError
from sagellm.serve.protocol import ChatCompletionRequest, CompletionRequest

Body = CompletionRequest | ChatCompletionRequest


def check_body(body: Body, cfg: ServeConfig) -> None:
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


def sampling_params(body: Body, num_prompt_tokens: int, cfg: ServeConfig, context: int):
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
