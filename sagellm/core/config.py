"""Typed configuration, loaded from YAML by one function.

Every model is frozen; validation errors are re-raised as :class:`ConfigError` whose message
names the dotted field path and the allowed values (``engine.dtype: Input should be 'float32'
or 'bfloat16' (got 'fp8')``). Configs do no I/O.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sagellm.core.errors import ConfigError

DEFAULT_MODEL = "smollm2-135m-instruct"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Which weights to run and in what precision."""

    path: str = DEFAULT_MODEL  # alias (see sagellm.models), HF checkpoint folder, or .gguf file
    dtype: Literal["float32", "bfloat16"] = "float32"
    tokenizer: str | None = None  # folder with tokenizer.json; None = next to the weights


class EngineConfig(_Frozen):
    """The engine and its memory/batching limits (vLLM's names where they exist)."""

    name: Literal["native"] = "native"
    model: ModelConfig = Field(default_factory=ModelConfig)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    num_threads: int | None = Field(default=None, ge=1)  # torch intra-op threads; None = torch's
    block_size_tokens: int = Field(default=16, ge=1)  # tokens per KV block
    num_kv_blocks: int | None = Field(default=None, ge=1)  # overrides kv_cache_bytes when set
    kv_cache_bytes: int = Field(default=2 * 1024**3, ge=1)  # KV pool size when num_kv_blocks unset
    max_num_seqs: int = Field(default=128, ge=1)  # running requests per step
    max_num_batched_tokens: int = Field(default=2048, ge=1)  # token budget per step
    max_model_len_tokens: int | None = Field(default=None, ge=2)  # None = the model's context
    enable_chunked_prefill: bool = True
    seed: int = 0  # base seed for requests without their own

    @model_validator(mode="after")
    def _check_budget(self) -> EngineConfig:
        if (
            not self.enable_chunked_prefill
            and self.max_model_len_tokens is not None
            and self.max_num_batched_tokens < self.max_model_len_tokens
        ):
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= "
                f"max_model_len_tokens ({self.max_model_len_tokens}) when "
                "enable_chunked_prefill is false"
            )
        return self


class SageLLMConfig(_Frozen):
    """Top-level config of a run; research modules add their sections here."""

    engine: EngineConfig = Field(default_factory=EngineConfig)


C = TypeVar("C", bound=BaseModel)


def _format_error(err: ValidationError, prefix: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        got = e.get("input")
        got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
        lines.append(f"{path or '<root>'}: {e['msg']}{got_s}")
    return "; ".join(lines)


def parse_config(data: dict[str, Any] | None, cls: type[C] = SageLLMConfig, prefix: str = "") -> C:
    """Validate a plain dict into ``cls``; raise :class:`ConfigError` naming the field path."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err, prefix)) from None


def load_config(path: str | Path, cls: type[C] = SageLLMConfig) -> C:
    """Read a YAML file and validate it into ``cls``."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return parse_config(data, cls)


def config_hash(cfg: BaseModel, length: int = 8) -> str:
    """A short stable hash of a config, used in run ids."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
