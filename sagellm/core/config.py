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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from sagellm.core.errors import ConfigError
from sagellm.core.installed import ENGINE_NAMES, installed_engine_names

DEFAULT_MODEL = "smollm2-135m-instruct"

#: The eviction policies ``EngineConfig.eviction_policy`` may name. ``sagellm.kv_policy``
#: registers one implementation under each (a test keeps the two equal); listing the names here
#: lets a config be validated without importing a research module from ``core``.
EVICTION_POLICY_NAMES: tuple[str, ...] = ("arc", "cost_aware", "lfu", "lru", "s3fifo", "sieve")
# kv_policy's MIGRATION_POLICIES registry holds exactly these (a test keeps them equal)
MIGRATION_POLICY_NAMES: tuple[str, ...] = ("cost_benefit", "demote")
#: ``AccelConfig.method``: weight quantizers in ``sagellm.accel`` (a test keeps them equal).
QUANT_METHOD_NAMES: tuple[str, ...] = ("awq", "fp8", "gptq", "int4", "int8")
#: ``AccelConfig.speculative_draft_quantization``: the round-to-nearest methods (no calibration
#: pass, so a drafter can be quantized without running the target over text).
DRAFT_QUANT_METHOD_NAMES: tuple[str, ...] = ("fp8", "int4", "int8")
#: ``AccelConfig.sparsity_method``: sparse attention over the paged KV cache.
SPARSITY_METHOD_NAMES: tuple[str, ...] = ("quest", "streaming")
#: ``AccelConfig.speculative_method``: drafters of speculative decoding.
DRAFTER_NAMES: tuple[str, ...] = ("draft_model", "layer_skip", "ngram")


def _check_name(field: str, name: str, known: tuple[str, ...]) -> str:
    if name not in known:
        raise ValueError(f"unknown {field} {name!r}; known: {', '.join(known)}")
    return name


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Which weights to run and in what precision."""

    path: str = DEFAULT_MODEL  # alias (see sagellm.models), HF checkpoint folder, or .gguf file
    dtype: Literal["float32", "bfloat16"] = "float32"
    tokenizer: str | None = None  # folder with tokenizer.json; None = next to the weights


class TenantQuotaConfig(_Frozen):
    """KV block limits of one tenant (None = unlimited); see kv_runtime.QuotaManager."""

    hard_blocks: int | None = Field(default=None, ge=1)  # never exceeded: requests wait
    soft_blocks: int | None = Field(default=None, ge=1)  # exceeded -> reclaimed first, counted

    @model_validator(mode="after")
    def _check_order(self) -> TenantQuotaConfig:
        if (
            self.hard_blocks is not None
            and self.soft_blocks is not None
            and self.soft_blocks > self.hard_blocks
        ):
            raise ValueError(
                f"soft_blocks ({self.soft_blocks}) must be <= hard_blocks ({self.hard_blocks})"
            )
        return self


class AccelConfig(_Frozen):
    """Acceleration techniques of ``sagellm.accel``, each off by default (the plan's fields first).

    Lossless: speculative decoding (greedy output equals plain decoding). Lossy: quantization and
    sparse attention; their accuracy cost is measured against fp32, never assumed.
    """

    # --- quantization (weights; the KV cache separately) ---
    enable_quantization: bool = False
    method: str = "int8"  # one of QUANT_METHOD_NAMES
    group_size: int = Field(default=64, ge=1)  # int4/awq/gptq: input columns per scale
    calibration_tokens: int = Field(default=2048, ge=16)  # awq/gptq calibration text length
    kv_cache_dtype: Literal["auto", "int8"] = "auto"  # "auto" = the model dtype
    # lm_head quantized too (21% of SmolLM2's weights; a tied embedding stays dense for lookups)
    quantize_lm_head: bool = True
    # --- sparse attention ---
    enable_sparsity: bool = False
    sparsity_method: str = "streaming"  # one of SPARSITY_METHOD_NAMES
    sink_tokens: int = Field(default=4, ge=0)  # streaming: first tokens always attended
    window_tokens: int = Field(default=1024, ge=1)  # streaming: most recent tokens attended
    quest_top_k_blocks: int = Field(default=8, ge=1)  # quest: KV blocks attended per query
    # --- speculative decoding ---
    speculative_tokens: int | None = Field(default=None, ge=1)  # drafts per step; None = off
    speculative_method: str = "ngram"  # one of DRAFTER_NAMES
    draft_model: str | None = None  # speculative_method draft_model: which draft (see accel)
    # ngram: suffix lengths tried, longest first
    speculative_ngram_min_tokens: int = Field(default=1, ge=1)
    speculative_ngram_max_tokens: int = Field(default=4, ge=1)
    # layer_skip: target layers the drafter skips (None = the odd layers of the middle half)
    speculative_skip_layers: tuple[int, ...] | None = None
    # draft_model: keep the first N layers of the draft (None: half the target's layers when
    # draft_model is None, i.e. a layer-truncated copy of the target; all of a loaded draft's)
    speculative_draft_layers: int | None = Field(default=None, ge=1)
    # KV blocks of a model drafter's own cache (None = as many as the target's pool)
    speculative_draft_kv_blocks: int | None = Field(default=None, ge=1)
    # draft_model: quantize the draft's own copy of its linears (one of
    # DRAFT_QUANT_METHOD_NAMES; group_size and quantize_lm_head as for the target). With no
    # draft_model checkpoint this makes the full-depth quantized copy of the target the default
    # draft (same tokenizer, ~4-8x fewer weight bytes per drafted token).
    speculative_draft_quantization: str | None = None

    @field_validator("method")
    @classmethod
    def _check_method(cls, name: str) -> str:
        return _check_name("quantization method", name, QUANT_METHOD_NAMES)

    @field_validator("sparsity_method")
    @classmethod
    def _check_sparsity(cls, name: str) -> str:
        return _check_name("sparsity method", name, SPARSITY_METHOD_NAMES)

    @field_validator("speculative_method")
    @classmethod
    def _check_drafter(cls, name: str) -> str:
        return _check_name("speculative method", name, DRAFTER_NAMES)

    @field_validator("speculative_draft_quantization")
    @classmethod
    def _check_draft_quant(cls, name: str | None) -> str | None:
        if name is None:
            return None
        return _check_name("speculative_draft_quantization", name, DRAFT_QUANT_METHOD_NAMES)

    @model_validator(mode="after")
    def _check_ngram(self) -> AccelConfig:
        lo, hi = self.speculative_ngram_min_tokens, self.speculative_ngram_max_tokens
        if lo > hi:
            raise ValueError(
                f"speculative_ngram_min_tokens ({lo}) must be <= "
                f"speculative_ngram_max_tokens ({hi})"
            )
        return self

    @model_validator(mode="after")
    def _check_draft_quant_method(self) -> AccelConfig:
        if self.speculative_draft_quantization and self.speculative_method != "draft_model":
            raise ValueError(
                "speculative_draft_quantization applies to speculative_method 'draft_model', "
                f"not {self.speculative_method!r}"
            )
        return self

    @model_validator(mode="after")
    def _check_window(self) -> AccelConfig:
        streaming = self.enable_sparsity and self.sparsity_method == "streaming"
        if streaming and self.window_tokens <= self.sink_tokens:
            raise ValueError(
                f"window_tokens ({self.window_tokens}) must be > sink_tokens ({self.sink_tokens})"
            )
        quest = self.enable_sparsity and self.sparsity_method == "quest"
        if quest and self.kv_cache_dtype == "int8":
            raise ValueError(
                "sparsity_method 'quest' reads raw keys for its block summaries: use "
                "kv_cache_dtype 'auto' with it (int8 KV works with 'streaming')"
            )
        return self


class EngineConfig(_Frozen):
    """The engine and its memory/batching limits (vLLM's names where they exist)."""

    name: str = "native"  # one of ENGINE_NAMES (sagellm.core.installed)
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
    # --- prefix reuse and KV tiers (issue 4) ---
    enable_prefix_caching: bool = False  # reuse KV of full blocks shared with earlier prompts
    prefix_cache_per_tenant: bool = True  # salt block hashes with tenant_id (no cross-tenant hit)
    eviction_policy: str = "lru"  # kv_policy name, one of EVICTION_POLICY_NAMES
    # where blocks leaving a tier go: "demote" (one tier down) or "cost_benefit" (drop when
    # recompute is cheaper than the transfer, at measured rates); see kv_policy.migration
    migration_policy: str = "demote"
    host_tier_blocks: int | None = Field(default=None, ge=1)  # CPU tier for demoted blocks
    host_tier_bytes: int | None = Field(default=None, ge=1)  # same, in bytes (not both)
    disk_tier_blocks: int | None = Field(default=None, ge=1)  # files under kv_cache_dir
    disk_tier_bytes: int | None = Field(default=None, ge=1)
    kv_cache_dir: str | None = None  # where the disk tier writes (checked writable at start)
    tenant_quotas: dict[str, TenantQuotaConfig] = Field(default_factory=dict)
    defrag_fragmentation_threshold: float | None = Field(default=None, gt=0.0, le=1.0)
    # --- scheduling (issue 10): every step is this strategy's plan ---
    scheduling_strategy: str = "fifo"  # a scheduler_ir strategy name (checked by the engine)
    overlap_kv_loads: bool = False  # read host/disk hits while the previous forward runs
    max_empty_steps: int = Field(default=64, ge=1)  # empty decisions with work waiting -> raise
    # multi-step decode (vLLM's num_scheduler_steps): a plan's forward of only greedy decodes,
    # at most 16 sequences, runs up to this many steps in one C++ call (the plan, inputs and
    # sampler bookkeeping once per burst); 1 = one step per plan. See native/decode_burst.py
    num_decode_steps: int = Field(default=1, ge=1, le=64)
    # --- acceleration (issue 13): quantization, sparse attention, speculative decoding ---
    accel: AccelConfig = Field(default_factory=AccelConfig)
    # --- tensor parallelism (issue 12): ranks as processes, see engines/native/tp_group ---
    tp_size: int = Field(default=1, ge=1)  # 1 = one process, the plain path
    # collectives between the ranks: "auto" = shm on CPU, nccl on CUDA (sagellm.comm_backend)
    tp_comm_backend: Literal["auto", "shm", "gloo", "nccl"] = "auto"
    tp_timeout_s: float = Field(default=30.0, gt=0.0)  # a silent rank -> error after this long
    # one collective per layer-part over the whole batch (the plan's all_reduce buckets); False
    # = one per request (the unbucketed plan), for measuring what fusion buys
    tp_fuse_all_reduce: bool = True
    # overlap each request's all_reduce with the next request's GEMM (when a layer-part has
    # more than one collective, i.e. tp_fuse_all_reduce False or a bucket split)
    tp_overlap_all_reduce: bool = False

    @field_validator("name")
    @classmethod
    def _check_engine_name(cls, name: str) -> str:
        if name not in ENGINE_NAMES:
            installed = ", ".join(installed_engine_names())
            raise ValueError(
                f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)} "
                f"(installed here: {installed})"
            )
        return name

    @field_validator("eviction_policy")
    @classmethod
    def _check_eviction_policy(cls, name: str) -> str:
        if name not in EVICTION_POLICY_NAMES:
            known = ", ".join(sorted(EVICTION_POLICY_NAMES))
            raise ValueError(f"unknown eviction policy {name!r}; known: {known}")
        return name

    @field_validator("migration_policy")
    @classmethod
    def _check_migration_policy(cls, name: str) -> str:
        if name not in MIGRATION_POLICY_NAMES:
            known = ", ".join(MIGRATION_POLICY_NAMES)
            raise ValueError(f"unknown migration policy {name!r}; known: {known}")
        return name

    @model_validator(mode="after")
    def _check_kv_tiers(self) -> EngineConfig:
        for tier in ("host_tier", "disk_tier"):
            if getattr(self, f"{tier}_blocks") is not None and getattr(self, f"{tier}_bytes"):
                raise ValueError(f"set {tier}_blocks or {tier}_bytes, not both")
        tiers = self.host_tier_blocks or self.host_tier_bytes or self.disk_tier_blocks
        if (tiers or self.disk_tier_bytes) and not self.enable_prefix_caching:
            raise ValueError("host/disk KV tiers need enable_prefix_caching: true")
        disk = self.disk_tier_blocks or self.disk_tier_bytes
        if disk and not self.kv_cache_dir:
            raise ValueError("kv_cache_dir must be set when disk_tier_blocks/bytes is set")
        if (
            self.num_kv_blocks is not None
            and self.max_model_len_tokens is not None
            and self.num_kv_blocks * self.block_size_tokens < self.max_model_len_tokens
        ):
            need = -(-self.max_model_len_tokens // self.block_size_tokens)
            raise ValueError(
                f"num_kv_blocks ({self.num_kv_blocks}) is smaller than one request of "
                f"max_model_len_tokens ({self.max_model_len_tokens}) needs ({need} blocks of "
                f"{self.block_size_tokens} tokens)"
            )
        return self

    @model_validator(mode="after")
    def _check_tp(self) -> EngineConfig:
        """What the ranks cannot mirror is refused when ``tp_size > 1`` (the KV each rank holds
        is its own heads; see engines/native/tp_group for what is mirrored)."""
        if self.tp_size == 1:
            return self
        refused = {
            "host_tier_blocks/host_tier_bytes": self.host_tier_blocks or self.host_tier_bytes,
            "disk_tier_blocks/disk_tier_bytes": self.disk_tier_blocks or self.disk_tier_bytes,
            "accel.enable_quantization": self.accel.enable_quantization,
            "accel.kv_cache_dtype int8": self.accel.kv_cache_dtype == "int8",
            "accel.enable_sparsity": self.accel.enable_sparsity,
            "accel.speculative_tokens": self.accel.speculative_tokens is not None,
        }
        on = [k for k, v in refused.items() if v]
        if on:
            raise ValueError(
                f"tp_size {self.tp_size} > 1 does not support {', '.join(on)} yet "
                "(set tp_size 1, or turn them off)"
            )
        if self.tp_comm_backend == "nccl" and self.device == "cpu":
            raise ValueError("tp_comm_backend 'nccl' needs device 'cuda'; on CPU use shm or gloo")
        return self

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
