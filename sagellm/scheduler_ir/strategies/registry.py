"""Strategies registered under the names configs use; unknown names list the known ones."""

from __future__ import annotations

from collections.abc import Callable

from sagellm.core.registry import Registry
from sagellm.scheduler_ir.protocol import Strategy

STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")


def make_strategy(name: str, **kwargs) -> Strategy:
    """``make_strategy("slo_aware")``; ValueError listing known names for an unknown one."""
    import sagellm.scheduler_ir.strategies  # noqa: F401  (registers every strategy)

    return STRATEGIES.get(name)(**kwargs)
