"""Engines behind one protocol (:class:`~sagellm.core.protocol.BaseEngine`).

``create_engine(config)`` picks the implementation registered under ``config.name``; heavy
engines (lmdeploy, vllm) import their packages only when created.
"""

from __future__ import annotations

from collections.abc import Callable

from sagellm.core.config import EngineConfig
from sagellm.core.protocol import BaseEngine
from sagellm.core.registry import Registry

ENGINES: Registry[Callable[[EngineConfig], BaseEngine]] = Registry("engine")


@ENGINES.register("native")
def _native(config: EngineConfig) -> BaseEngine:
    from sagellm.engines.native import NativeEngine

    return NativeEngine(config)


def create_engine(config: EngineConfig | None = None) -> BaseEngine:
    config = config or EngineConfig()
    return ENGINES.get(config.name)(config)


__all__ = ["ENGINES", "BaseEngine", "create_engine"]
