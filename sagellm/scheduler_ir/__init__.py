"""scheduler_ir: an executable scheduling IR between strategies and engines.

``IRNode``/``IRGraph`` (types, graph), ``IRBuilder`` (decision -> per-request nodes),
``IROptimizer`` (validate, merge chunks, fuse, bucket all-reduces, hoist kv_loads),
``ExecutionPlan`` + JSON, ``ExecutorAPI`` (submit_plan / cancel / status), ``PlanLog`` (offline
replay), ``PDSeparator`` (prefill/decode split with kv_transfer), ``Router`` and the strategies
in ``scheduler_ir.strategies``. Engines run every step as a strategy's plan (the native engine:
``NativeEngine.step``); no torch at import time: engine adapters live with their engines.
"""

from sagellm.scheduler_ir.builder import IRBuilder
from sagellm.scheduler_ir.executor import ExecutorAPI
from sagellm.scheduler_ir.graph import IRCycleError, IRGraph
from sagellm.scheduler_ir.optimizer import IROptimizer
from sagellm.scheduler_ir.pd_separation import PDAssignment, PDSeparator, PDSplit
from sagellm.scheduler_ir.plan import (
    ExecutionPlan,
    lower,
    plan_from_dict,
    plan_from_json,
    plan_to_dict,
    plan_to_json,
)
from sagellm.scheduler_ir.protocol import PlanTarget, Strategy
from sagellm.scheduler_ir.replay import PlanLog, replay
from sagellm.scheduler_ir.strategies import STRATEGIES, make_strategy
from sagellm.scheduler_ir.types import (
    NODE_TYPES,
    ForwardItem,
    IRNode,
    PlanStatus,
    RequestView,
    SchedulerState,
    StepDecision,
    node_config,
)

__all__ = [
    "NODE_TYPES",
    "STRATEGIES",
    "ExecutionPlan",
    "ExecutorAPI",
    "ForwardItem",
    "IRBuilder",
    "IRCycleError",
    "IRGraph",
    "IRNode",
    "IROptimizer",
    "PDAssignment",
    "PDSeparator",
    "PDSplit",
    "PlanLog",
    "PlanStatus",
    "PlanTarget",
    "RequestView",
    "SchedulerState",
    "StepDecision",
    "Strategy",
    "lower",
    "make_strategy",
    "node_config",
    "plan_from_dict",
    "plan_from_json",
    "plan_to_dict",
    "plan_to_json",
    "replay",
]
