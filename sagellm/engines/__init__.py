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


@ENGINES.register("lmdeploy")
def _lmdeploy(config: EngineConfig) -> BaseEngine:
    from sagellm.engines.lmdeploy.engine import LmdeployEngine

    return LmdeployEngine(config)


@ENGINES.register("vllm")
def _vllm(config: EngineConfig) -> BaseEngine:
    from sagellm.engines.vllm import VllmEngine

    return VllmEngine(config)


def create_engine(config: EngineConfig | None = None) -> BaseEngine:
    config = config or EngineConfig()
    return ENGINES.get(config.name)(config)


__all__ = ["ENGINES", "BaseEngine", "create_engine"]
