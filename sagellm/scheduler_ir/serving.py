"""PlanDrivenEngine: an engine whose every step is an IR plan chosen by a strategy.

Each ``step``::

    state = target.snapshot()            # read-only views of the unfinished requests
    decision = strategy.decide(state)    # which requests, how many tokens, what to preempt
    graph = optimizer.optimize(builder.build(decision, state))
    plan = ExecutionPlan.of(plan_id, graph, instance_id)
    executor.submit_and_run(plan)        # the engine runs exactly the plan

It honours the :class:`~sagellm.core.protocol.BaseEngine` calls the benchmark runner makes, so
``BenchmarkRunner(PlanDrivenEngine(...))`` measures a strategy. ``ir_stats`` reports the IR
overhead: seconds in snapshot + strategy + build + optimize vs seconds executing, as wall
time and as this thread's CPU time (on a shared machine wall time also counts waiting for a
core; with ``num_threads=1`` the forward runs on this thread, so CPU time splits fairly).
"""

from __future__ import annotations

import dataclasses
import time

from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request, RequestId, RequestOutput
from sagellm.scheduler_ir.builder import IRBuilder
from sagellm.scheduler_ir.executor import ExecutorAPI
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.optimizer import IROptimizer
from sagellm.scheduler_ir.plan import ExecutionPlan
from sagellm.scheduler_ir.protocol import PlanTarget, Strategy
from sagellm.scheduler_ir.replay import PlanLog
from sagellm.scheduler_ir.strategies.registry import make_strategy
from sagellm.scheduler_ir.types import SchedulerState, StepDecision


def token_split(decision: StepDecision, state: SchedulerState) -> tuple[int, int]:
    """(prefill tokens, decode tokens) of a decision."""
    views = state.by_id()
    pre = dec = 0
    for rid, n in decision.items:
        v = views[rid]
        if n == 1 and v.running and v.num_computed_tokens >= v.num_prompt_tokens:
            dec += 1
        else:
            pre += n
    return pre, dec


def validate_slo(request: Request) -> None:
    """Raise InvalidRequestError when an SLO objective is set but not > 0 seconds."""
    for field in ("ttft_s", "tpot_s"):
        v = getattr(request.slo, field)
        if v is not None and not v > 0:
            raise InvalidRequestError(
                f"request {request.request_id!r}: slo.{field} must be None or > 0 seconds, "
                f"got {v!r}"
            )


class PlanDrivenEngine:
    """Wraps ``engine`` (any BaseEngine) and its ``target`` (the PlanTarget over it).

    ``tenant_priority`` / ``tenant_model`` optionally derive a request's priority / model name
    from its tenant (workloads carry tenants, not priorities; aegaeon schedules per model).
    ``plan_log`` records requests and plans for offline replay.
    """

    def __init__(
        self,
        engine,
        target: PlanTarget,
        strategy: Strategy | str = "fifo",
        builder: IRBuilder | None = None,
        optimizer: IROptimizer | None = None,
        plan_log: PlanLog | None = None,
        tenant_priority: dict[str, int] | None = None,
        tenant_model: dict[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.target = target
        self.strategy = make_strategy(strategy) if isinstance(strategy, str) else strategy
        self.builder = builder or IRBuilder()
        self.optimizer = optimizer or IROptimizer(engine.config.max_num_batched_tokens)
        self.executor = ExecutorAPI([target])
        self.plan_log = plan_log
        self.tenant_priority = tenant_priority or {}
        self.tenant_model = tenant_model or {}
        self.capabilities = frozenset(engine.capabilities | {"scheduler_ir"})
        self.arch = getattr(engine, "arch", None)
        self.device = getattr(engine, "device", "cpu")
        self._num_plans = 0
        self.ir_s = self.execute_s = 0.0  # wall seconds: IR pipeline, plan execution
        self.ir_cpu_s = self.execute_cpu_s = 0.0  # this thread's CPU seconds, same split
        self.num_rejected = 0
        self.last_rejection: str | None = None

    # ------------------------------------------------------------ BaseEngine delegation

    def clock(self) -> float:
        return self.engine.clock() if hasattr(self.engine, "clock") else time.perf_counter()

    def add_request(self, request: Request) -> None:
        """Queue ``request``; InvalidRequestError for an SLO <= 0 (or what the engine rejects)."""
        validate_slo(request)
        t = request.tenant_id
        if t in self.tenant_priority:
            request = dataclasses.replace(request, priority=self.tenant_priority[t])
        if t in self.tenant_model:
            request = dataclasses.replace(request, model=self.tenant_model[t])
        self.engine.add_request(request)
        if self.plan_log is not None:
            self.plan_log.add(request)

    def abort(self, request_id: RequestId) -> bool:
        return self.engine.abort(request_id)

    def has_unfinished(self) -> bool:
        return self.engine.has_unfinished()

    def request_metrics(self):
        return self.engine.request_metrics()

    def step_metrics(self):
        return self.engine.step_metrics()

    def reset_metrics(self) -> None:
        """Reset the engine's metrics; the IR counters are cumulative (``reset_ir_stats``)."""
        self.engine.reset_metrics()

    def reset_ir_stats(self) -> None:
        self.ir_s = self.execute_s = self.ir_cpu_s = self.execute_cpu_s = 0.0
        self.num_rejected = 0

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        return self.engine.output_token_ids(request_id)

    def stats(self) -> dict[str, float]:
        return {**self.engine.stats(), **self.ir_stats()}

    def ir_stats(self) -> dict[str, float]:
        total = self.ir_s + self.execute_s
        cpu = self.ir_cpu_s + self.execute_cpu_s
        return {
            "ir_s": self.ir_s,
            "execute_s": self.execute_s,
            "ir_fraction": self.ir_s / total if total > 0 else 0.0,
            "ir_cpu_fraction": self.ir_cpu_s / cpu if cpu > 0 else 0.0,
            "num_plans": float(self._num_plans),
            "num_rejected_plans": float(self.num_rejected),
        }

    # ------------------------------------------------------------ the step

    def make_plan(self) -> tuple[ExecutionPlan, StepDecision, SchedulerState]:
        state = self.target.snapshot(self.strategy.needs_prefix_info)
        decision = self.strategy.decide(state)
        graph = self.optimizer.optimize(self.builder.build(decision, state))
        plan = ExecutionPlan.of(
            f"{self.target.instance_id}-{self._num_plans}", graph, self.target.instance_id
        )
        self._num_plans += 1
        return plan, decision, state

    def step(self) -> list[RequestOutput]:
        c0, t0 = time.thread_time(), time.perf_counter()
        plan, decision, state = self.make_plan()
        c1, t1 = time.thread_time(), time.perf_counter()
        status, outs = self.executor.submit_and_run(plan)
        if status.state != "completed":
            # a bad plan changes nothing; run an empty one so aborts still flush
            self.num_rejected += 1
            self.last_rejection = status.reason
            empty = ExecutionPlan.of(plan.plan_id + "-flush", IRGraph(), plan.target_instance_id)
            status, outs = self.executor.submit_and_run(empty)
            plan, decision = empty, StepDecision()
        c2, t2 = time.thread_time(), time.perf_counter()
        if self.plan_log is not None and status.state == "completed":
            self.plan_log.plan(plan)
        self.ir_s += t1 - t0
        self.execute_s += t2 - t1
        self.ir_cpu_s += c1 - c0
        self.execute_cpu_s += c2 - c1
        if decision.items:
            pre, dec = token_split(decision, state)
            self.strategy.observe(pre, dec, t2 - t1)
        return outs
