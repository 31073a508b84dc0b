"""Contracts between the scheduling IR, its strategies and the engines that execute plans."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sagellm.core.types import RequestOutput
from sagellm.scheduler_ir.plan import ExecutionPlan
from sagellm.scheduler_ir.types import SchedulerState, StepDecision


@runtime_checkable
class PlanTarget(Protocol):
    """One engine instance as the IR sees it.

    ``check`` returns why ``plan`` cannot run now (None when it can) and changes nothing;
    ``execute`` runs a plan that passed ``check`` and returns the step's request outputs.
    """

    instance_id: str

    def snapshot(self, with_prefix: bool = False) -> SchedulerState: ...

    def check(self, plan: ExecutionPlan) -> str | None: ...

    def execute(self, plan: ExecutionPlan) -> list[RequestOutput]: ...


@runtime_checkable
class Strategy(Protocol):
    """A scheduling policy: one :class:`StepDecision` per step from a state snapshot.

    ``observe`` feeds back what the executed step cost (seconds), so policies that predict
    service times can learn them. A strategy owns its own state (e.g. an adaptive mode).
    """

    name: str

    def decide(self, state: SchedulerState) -> StepDecision: ...

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None: ...
