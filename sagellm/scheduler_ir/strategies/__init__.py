"""Scheduling strategies, registered by name: fifo, priority, slo_aware, lpm, hybrid, adaptive,
aegaeon. ``make_strategy(name)``; an unknown name raises ValueError listing the known ones."""

from sagellm.scheduler_ir.strategies.adaptive import AdaptiveStrategy
from sagellm.scheduler_ir.strategies.aegaeon import AegaeonStrategy, aegaeon_quotas
from sagellm.scheduler_ir.strategies.base import RankingStrategy, fill_budget
from sagellm.scheduler_ir.strategies.fifo import FifoStrategy
from sagellm.scheduler_ir.strategies.hybrid import HybridStrategy
from sagellm.scheduler_ir.strategies.lpm import LpmStrategy
from sagellm.scheduler_ir.strategies.priority import PriorityStrategy
from sagellm.scheduler_ir.strategies.registry import STRATEGIES, make_strategy
from sagellm.scheduler_ir.strategies.service_time import ServiceTimeModel
from sagellm.scheduler_ir.strategies.slo_aware import SloAwareStrategy

__all__ = [
    "STRATEGIES",
    "AdaptiveStrategy",
    "AegaeonStrategy",
    "FifoStrategy",
    "HybridStrategy",
    "LpmStrategy",
    "PriorityStrategy",
    "RankingStrategy",
    "ServiceTimeModel",
    "SloAwareStrategy",
    "aegaeon_quotas",
    "fill_budget",
    "make_strategy",
]
