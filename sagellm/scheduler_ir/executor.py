"""ExecutorAPI: submit, cancel and query execution plans on named engine instances.

``submit_plan`` checks a plan against its target at once (unknown instance, unknown or finished
request, token counts, KV blocks, node types the instance cannot run) and either queues it or
rejects it with a reason; a rejected plan changes nothing and the instance keeps serving.
``run`` executes queued plans in submission order, re-checking each (state may have moved).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from sagellm.core.types import RequestOutput
from sagellm.scheduler_ir.plan import ExecutionPlan
from sagellm.scheduler_ir.protocol import PlanTarget
from sagellm.scheduler_ir.types import PlanStatus

MAX_STATUSES = 100_000  # statuses kept for ``status``; the oldest are forgotten first


class ExecutorAPI:
    """Plans in, request outputs out, over one or more :class:`PlanTarget` instances."""

    def __init__(self, targets: list[PlanTarget]) -> None:
        self.targets: dict[str, PlanTarget] = {}
        for t in targets:
            if t.instance_id in self.targets:
                raise ValueError(f"instance_id {t.instance_id!r} appears twice")
            self.targets[t.instance_id] = t
        self._queues: dict[str, deque[ExecutionPlan]] = {i: deque() for i in self.targets}
        self._status: OrderedDict[str, PlanStatus] = OrderedDict()

    def _set(self, status: PlanStatus) -> PlanStatus:
        self._status[status.plan_id] = status
        self._status.move_to_end(status.plan_id)
        while len(self._status) > MAX_STATUSES:
            self._status.popitem(last=False)
        return status

    def submit_plan(self, plan: ExecutionPlan) -> PlanStatus:
        """Queue ``plan`` (state "queued") or reject it (state "rejected", with a reason)."""
        if plan.plan_id in self._status and self._status[plan.plan_id].state == "queued":
            return PlanStatus(plan.plan_id, "rejected", f"plan_id {plan.plan_id!r} is queued")
        target = self.targets.get(plan.target_instance_id)
        if target is None:
            known = ", ".join(sorted(self.targets))
            reason = f"unknown target_instance_id {plan.target_instance_id!r}; known: {known}"
            return self._set(PlanStatus(plan.plan_id, "rejected", reason))
        reason = target.check(plan)
        if reason is not None:
            return self._set(PlanStatus(plan.plan_id, "rejected", reason))
        self._queues[plan.target_instance_id].append(plan)
        return self._set(PlanStatus(plan.plan_id, "queued"))

    def cancel(self, plan_id: str) -> bool:
        """Drop a queued plan; False when it is not queued (unknown, done or rejected)."""
        st = self._status.get(plan_id)
        if st is None or st.state != "queued":
            return False
        for q in self._queues.values():
            for p in q:
                if p.plan_id == plan_id:
                    q.remove(p)
                    self._set(PlanStatus(plan_id, "cancelled"))
                    return True
        return False

    def status(self, plan_id: str) -> PlanStatus:
        """The plan's state; ValueError for a plan id never submitted (or long forgotten)."""
        try:
            return self._status[plan_id]
        except KeyError:
            raise ValueError(f"unknown plan_id {plan_id!r}") from None

    def run(self, instance_id: str, recheck: bool = True) -> list[RequestOutput]:
        """Execute every queued plan of ``instance_id`` in order; return their outputs.

        Each plan is checked again first (``recheck``) since earlier plans moved the state on;
        ``submit_and_run`` skips that for the plan it has just checked."""
        if instance_id not in self.targets:
            raise ValueError(f"unknown instance_id {instance_id!r}")
        target, q = self.targets[instance_id], self._queues[instance_id]
        outputs: list[RequestOutput] = []
        while q:
            plan = q.popleft()
            reason = target.check(plan) if recheck else None
            if reason is not None:
                self._set(PlanStatus(plan.plan_id, "failed", reason))
                continue
            try:
                outs = target.execute(plan)
            except RuntimeError as err:  # e.g. an allocation refused midway: the step fails,
                self._set(PlanStatus(plan.plan_id, "failed", str(err)))  # the instance serves on
                continue
            outputs.extend(outs)
            self._set(PlanStatus(plan.plan_id, "completed", num_outputs=len(outs)))
        return outputs

    def submit_and_run(self, plan: ExecutionPlan) -> tuple[PlanStatus, list[RequestOutput]]:
        """``submit_plan`` then ``run`` on its instance (what a serving loop does each step)."""
        st = self.submit_plan(plan)
        if st.state != "queued":
            return st, []
        if len(self._queues[plan.target_instance_id]) == 1:
            outs = self.run(plan.target_instance_id, recheck=False)
        else:
            outs = self.run(plan.target_instance_id)
        return self.status(plan.plan_id), outs
