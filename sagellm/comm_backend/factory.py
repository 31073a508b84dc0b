"""``create_backend(config)``: the backend registered under ``config.backend``."""

from __future__ import annotations

from sagellm.comm_backend.base import CommBackendBase
from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.types import BACKEND_NAMES, CommConfig
from sagellm.core.errors import ConfigError


def create_backend(config: CommConfig, stats: CommStats | None = None) -> CommBackendBase:
    """Join the group ``config`` describes (blocks until every rank arrived or
    ``config.timeout_s`` passed)."""
    if config.backend == "mock":
        from sagellm.comm_backend.mock import MockBackend

        return MockBackend(config, stats)
    if config.backend == "shm":
        from sagellm.comm_backend.shm import ShmBackend

        return ShmBackend(config, stats)
    if config.backend in ("gloo", "nccl"):
        from sagellm.comm_backend.torch_dist import TorchDistBackend

        return TorchDistBackend(config, stats)
    raise ConfigError(f"comm.backend must be one of {list(BACKEND_NAMES)}, got {config.backend!r}")
