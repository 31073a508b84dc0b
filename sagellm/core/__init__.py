"""Core: typed config, request/response types, errors, registries, the engine protocol and
atomic file writes (``core.io``)."""

from sagellm.core.config import (
    DEFAULT_MODEL,
    DRAFTER_NAMES,
    EVICTION_POLICY_NAMES,
    QUANT_METHOD_NAMES,
    SPARSITY_METHOD_NAMES,
    AccelConfig,
    EngineConfig,
    ModelConfig,
    SageLLMConfig,
    TenantQuotaConfig,
    config_hash,
    load_config,
    parse_config,
)
from sagellm.core.errors import (
    ConfigError,
    InvalidRequestError,
    ModelLoadError,
    PlanRejectedError,
    SageLLMError,
    SchedulingStalledError,
)
from sagellm.core.installed import ENGINE_NAMES, installed_engine_names, vllm_python
from sagellm.core.paths import from_project_root, project_root
from sagellm.core.protocol import BaseEngine
from sagellm.core.registry import Registry
from sagellm.core.types import (
    SLO,
    BlockId,
    FinishReason,
    Request,
    RequestId,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
    StepMetrics,
    TenantId,
)

__all__ = [
    "DEFAULT_MODEL",
    "DRAFTER_NAMES",
    "ENGINE_NAMES",
    "EVICTION_POLICY_NAMES",
    "QUANT_METHOD_NAMES",
    "SLO",
    "SPARSITY_METHOD_NAMES",
    "AccelConfig",
    "BaseEngine",
    "BlockId",
    "ConfigError",
    "EngineConfig",
    "FinishReason",
    "InvalidRequestError",
    "ModelConfig",
    "ModelLoadError",
    "PlanRejectedError",
    "Registry",
    "Request",
    "RequestId",
    "RequestMetrics",
    "RequestOutput",
    "SageLLMConfig",
    "SageLLMError",
    "SamplingParams",
    "SchedulingStalledError",
    "StepMetrics",
    "TenantId",
    "TenantQuotaConfig",
    "config_hash",
    "from_project_root",
    "installed_engine_names",
    "load_config",
    "parse_config",
    "project_root",
    "vllm_python",
]
