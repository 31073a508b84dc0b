"""ExecutorAPI with a fake instance: queueing, rejection reasons, cancel, failures."""

import pytest

from conftest import state, view
from sagellm.core.types import RequestOutput
from sagellm.scheduler_ir import ExecutionPlan, ExecutorAPI, IRBuilder, StepDecision


class FakeTarget:
    instance_id = "i0"

    def __init__(self, fail=False):
        self.ran: list[str] = []
        self.fail = fail

    def snapshot(self, with_prefix=False):
        return state([view("a", prompt=4)])

    def check(self, plan):
        return None if set(plan.request_ids) <= {"a"} else f"unknown {sorted(plan.request_ids)}"

    def execute(self, plan):
        if self.fail:
            raise RuntimeError("no block for a KV copy")
        self.ran.append(plan.plan_id)
        return [RequestOutput("a", [1], False)]


def plan(pid, rid="a", instance="i0"):
    s = state([view(rid, prompt=4)])
    return ExecutionPlan.of(pid, IRBuilder().build(StepDecision(((rid, 4),)), s), instance)


def test_queue_run_cancel_and_status():
    t = FakeTarget()
    api = ExecutorAPI([t])
    assert api.submit_plan(plan("p1")).state == "queued"
    assert api.submit_plan(plan("p2")).state == "queued"
    assert api.submit_plan(plan("p1")).reason == "plan_id 'p1' is queued"
    assert api.cancel("p2") and not api.cancel("p2")
    assert [o.request_id for o in api.run("i0")] == ["a"] and t.ran == ["p1"]
    assert [api.status(p).state for p in ("p1", "p2")] == ["completed", "cancelled"]
    assert api.status("p1").num_outputs == 1
    st = api.submit_plan(plan("p3", rid="zz"))
    assert (st.state, st.reason) == ("rejected", "unknown ['zz']")
    st = api.submit_plan(plan("p4", instance="i9"))
    assert st.reason == "unknown target_instance_id 'i9'; known: i0"
    with pytest.raises(ValueError, match="unknown instance_id 'i9'"):
        api.run("i9")
    with pytest.raises(ValueError, match="appears twice"):
        ExecutorAPI([t, t])


def test_a_plan_that_raises_is_failed_and_the_next_one_runs():
    t = FakeTarget(fail=True)
    api = ExecutorAPI([t])
    st, outs = api.submit_and_run(plan("p1"))
    assert (st.state, st.reason, outs) == ("failed", "no block for a KV copy", [])
    t.fail = False
    st, outs = api.submit_and_run(plan("p2"))
    assert st.state == "completed" and len(outs) == 1
