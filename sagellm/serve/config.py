"""The server's own settings: where it listens, who may call it, and the per-request limits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ServeConfig(BaseModel):
    """How ``sagellm serve`` listens and what it accepts (the engine has its own EngineConfig).

    Every limit turns into a 4xx with an OpenAI-style error body, never a crash:
    body over ``max_body_bytes`` -> 413, more in-flight requests than
    ``max_concurrent_streams`` -> 429, the others -> 400 naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    served_model_name: str  # what /v1/models lists and requests must name
    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = Field(default=8000, ge=0, le=65535)
    api_key: str | None = None  # set -> every /v1/* route needs "Authorization: Bearer <key>"
    metrics_require_key: bool = False  # /metrics behind the key too
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)  # request body, bytes
    max_prompt_tokens: int | None = Field(default=None, ge=1)  # None = the engine's context
    max_tokens_limit: int = Field(default=4096, ge=1)  # largest max_tokens a request may ask
    default_max_tokens: int = Field(default=16, ge=1)  # completions without max_tokens
    max_n: int = Field(default=1, ge=1, le=1)  # choices per request (only 1 is implemented)
    # in-flight generation requests, streamed or not (each holds a queue and engine state)
    max_concurrent_streams: int = Field(default=256, ge=1)
