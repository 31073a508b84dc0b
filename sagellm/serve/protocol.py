"""Request bodies of the OpenAI API subset served here (pydantic), with vLLM's extra fields
(``top_k``, ``ignore_eos``, ``stop_token_ids``, ``return_token_ids``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False  # a last chunk with ``usage`` and no choices


class _Generation(BaseModel):
    """Fields both endpoints share. Unknown fields are ignored, as OpenAI's server does."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # None = the served model
    max_tokens: int | None = None  # output tokens; None = the endpoint's default
    temperature: float = Field(default=1.0, ge=0.0)  # 0 = greedy
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int | None = None  # vLLM extra; -1 or None = all tokens
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None  # only empty is supported (no stop strings)
    stop_token_ids: list[int] | None = None  # vLLM extra
    ignore_eos: bool = False  # vLLM extra
    return_token_ids: bool = False  # vLLM extra: each choice carries its token ids
    logprobs: int | bool | None = None  # not supported (must be unset)
    user: str | None = None  # tenant id for KV quotas and prefix-cache salting


class CompletionRequest(_Generation):
    """``POST /v1/completions``: one prompt, text or token ids."""

    prompt: str | list[int] | list[str] | list[list[int]]
    echo: bool = False  # not supported (must be false)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, object]] | None = None


class ChatCompletionRequest(_Generation):
    """``POST /v1/chat/completions``: messages through the model's chat template."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None  # newer name of max_tokens


__all__ = ["ChatCompletionRequest", "ChatMessage", "CompletionRequest", "StreamOptions"]
