"""The native engine's one path (every step a strategy's IR plan): outputs equal HF greedy
for every strategy, plans replay offline on a fresh engine, bad plans are rejected and the
engine keeps serving, a stalled strategy raises."""

import pytest
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.errors import (
    ConfigError,
    InvalidRequestError,
    PlanRejectedError,
    SchedulingStalledError,
)
from sagellm.core.types import SLO, Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.native.plan_exec import NativePlanTarget
from sagellm.scheduler_ir import (
    ExecutionPlan,
    ExecutorAPI,
    IRBuilder,
    IRGraph,
    IRNode,
    PlanLog,
    StepDecision,
    node_config,
    replay,
)

STRATEGIES = ["fifo", "priority", "slo_aware", "lpm", "hybrid", "adaptive", "aegaeon"]
SP = SamplingParams(max_tokens=10, ignore_eos=True)


def engine(folder, strategy="fifo", **kw):
    return NativeEngine.from_pretrained(folder, scheduling_strategy=strategy, **kw)


def drive(pe, prompts, stagger=2, **req_kw):
    pending = [(f"r{i}", p) for i, p in enumerate(prompts)]
    steps = 0
    while pending or pe.has_unfinished():
        if pending and steps % stagger == 0:
            rid, p = pending.pop(0)
            prio = int(rid[1:]) % 3
            pe.add_request(Request(rid, p, SP, priority=prio, slo=SLO(1.0, 0.5), **req_kw))
        pe.step()
        steps += 1
    return [pe.output_token_ids(f"r{i}") for i in range(len(prompts))]


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    prompts = prompts_of([9, 17, 1, 26, 4, 12], seed=3)
    return folder, prompts, [hf_reference(model, p, SP.max_tokens)[0] for p in prompts]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_plan_driven_output_equals_hf(reference, strategy):
    folder, prompts, refs = reference
    # 12 blocks of 4 tokens and a 16-token budget: chunked prefill and preemption both happen
    eng = engine(folder, strategy, block_size_tokens=4, num_kv_blocks=12, max_num_batched_tokens=16)
    assert drive(eng, prompts) == refs
    assert eng.num_failed_admissions == 0 and eng.kv.num_referenced_blocks == 0
    assert max(s.num_batched_tokens for s in eng.step_metrics()) <= 16
    assert eng.ir_stats()["num_plans"] >= len(eng.step_metrics())


def test_preemption_happens_and_priority_survives_it(reference):
    folder, prompts, refs = reference
    eng = engine(
        folder, "priority", block_size_tokens=4, num_kv_blocks=12, max_num_batched_tokens=16
    )
    assert drive(eng, prompts) == refs
    pre = {m.request_id: m.preemptions for m in eng.request_metrics()}
    assert sum(pre.values()) >= 1
    # only lower-priority requests were evicted, and a victim's request kept its priority
    for rid, k in pre.items():
        if k:
            assert int(rid[1:]) % 3 < 2


def test_plans_replay_on_a_fresh_engine(reference, tmp_path):
    folder, prompts, refs = reference
    kw = dict(block_size_tokens=4, num_kv_blocks=12, max_num_batched_tokens=16)
    eng = engine(folder, "slo_aware", **kw)
    log = eng.plan_log = PlanLog()
    drive(eng, prompts)
    log.save(tmp_path / "plans.jsonl")
    fresh = NativeEngine.from_pretrained(folder, **kw)
    loaded = PlanLog.load(tmp_path / "plans.jsonl")
    assert len(loaded.plans) == len(log.plans) > 0
    replay(loaded, fresh, ExecutorAPI([NativePlanTarget(fresh)]))
    assert [fresh.output_token_ids(f"r{i}") for i in range(len(prompts))] == refs
    assert [s.num_batched_tokens for s in fresh.step_metrics()] == [
        s.num_batched_tokens for s in eng.step_metrics()
    ]


def test_bad_plans_are_rejected_with_a_reason_and_the_engine_keeps_serving(reference):
    folder, prompts, refs = reference
    eng = NativeEngine.from_pretrained(folder, block_size_tokens=4, num_kv_blocks=12)
    eng.instance_id = "gpu-7"
    target = NativePlanTarget(eng)
    api = ExecutorAPI([target])
    eng.add_request(Request("r0", prompts[0], SP))
    good = IRBuilder().build(StepDecision((("r0", len(prompts[0])),)), target.snapshot())
    st = api.submit_plan(ExecutionPlan.of("p-bad-instance", good, "gpu-9"))
    assert (
        st.state == "rejected" and "unknown target_instance_id 'gpu-9'; known: gpu-7" in st.reason
    )
    ghost = IRGraph(
        (
            IRNode(
                "prefill/x",
                "prefill",
                (),
                ("h",),
                node_config(request_id="ghost", start_tokens=0, num_tokens=3),
            ),
        )
    )
    st = api.submit_plan(ExecutionPlan.of("p-ghost", ghost, "gpu-7"))
    assert st.state == "rejected" and "'ghost'" in st.reason
    skip = IRBuilder().build(StepDecision((("r0", 2),)), target.snapshot())
    api.submit_and_run(ExecutionPlan.of("p-ok", skip, "gpu-7"))
    st = api.submit_plan(ExecutionPlan.of("p-stale", skip, "gpu-7"))  # KV start moved on
    assert st.state == "rejected" and "plan starts at token 0, the engine has 2" in st.reason
    assert api.status("p-ghost").state == "rejected" and api.status("p-ok").state == "completed"
    with pytest.raises(ValueError, match="unknown plan_id 'nope'"):
        api.status("nope")
    # a queued plan can be cancelled; afterwards the engine serves r0 to the oracle's answer
    rest = IRBuilder().build(StepDecision((("r0", len(prompts[0]) - 2),)), target.snapshot())
    assert api.submit_plan(ExecutionPlan.of("p-q", rest, "gpu-7")).state == "queued"
    assert api.cancel("p-q") and api.status("p-q").state == "cancelled" and not api.cancel("p-q")
    # a plan handed to step() directly is checked the same way: rejected, nothing changes
    with pytest.raises(PlanRejectedError, match="plan starts at token 0, the engine has 2"):
        eng.step(ExecutionPlan.of("p-stale-2", skip, "gpu-7"))
    assert eng.queues.running[0].num_computed_tokens == 2
    while eng.has_unfinished():
        eng.step()
    assert eng.output_token_ids("r0") == refs[0]


def test_slo_must_be_positive(reference):
    folder, prompts, _ = reference
    eng = engine(folder, "slo_aware")
    with pytest.raises(InvalidRequestError, match=r"slo.ttft_s must be None or > 0 seconds"):
        eng.add_request(Request("r0", prompts[0], SP, slo=SLO(ttft_s=0.0)))
    with pytest.raises(InvalidRequestError, match=r"slo.tpot_s must be None or > 0"):
        eng.add_request(Request("r1", prompts[0], SP, slo=SLO(tpot_s=-1.0)))
    assert not eng.has_unfinished()


def test_unknown_strategy_is_a_config_error_listing_the_known_ones(reference):
    folder, _, _ = reference
    with pytest.raises(ConfigError, match=r"engine.scheduling_strategy: .*'nope'.*fifo"):
        engine(folder, "nope")


class _Idle:
    name = "idle"

    def decide(self, state):
        return StepDecision()

    def observe(self, *args):
        pass


def test_a_strategy_that_never_schedules_raises_instead_of_spinning(reference):
    folder, prompts, _ = reference
    eng = engine(folder, max_empty_steps=3)
    eng.strategy = _Idle()
    eng.add_request(Request("r0", prompts[0], SP))
    for _ in range(3):
        eng.step()
    with pytest.raises(SchedulingStalledError, match="strategy 'idle' returned an empty"):
        eng.step()


def test_unfused_plans_give_the_same_tokens(reference):
    """Fusion is an optimization only: running each request's forward as its own engine step
    (no optimizer) yields the same greedy tokens."""
    folder, prompts, refs = reference
    eng = NativeEngine.from_pretrained(folder, block_size_tokens=4)
    target = NativePlanTarget(eng)
    api = ExecutorAPI([target])
    for i, p in enumerate(prompts[:3]):
        eng.add_request(Request(f"r{i}", p, SP))
    from sagellm.scheduler_ir import make_strategy

    fifo = make_strategy("fifo")
    k = 0
    while eng.has_unfinished():
        s = target.snapshot()
        graph = IRBuilder(prefill_chunk_tokens=5).build(fifo.decide(s), s)
        st, _ = api.submit_and_run(ExecutionPlan.of(f"u{k}", graph, target.instance_id))
        assert st.state == "completed", st.reason
        k += 1
    assert [eng.output_token_ids(f"r{i}") for i in range(3)] == refs[:3]


def test_aegaeon_two_models_on_one_instance_one_model_per_step(reference):
    folder, prompts, refs = reference
    eng = engine(
        folder,
        "aegaeon",
        block_size_tokens=4,
        num_kv_blocks=12,
        max_num_batched_tokens=16,
        max_num_seqs=3,
    )
    log = eng.plan_log = PlanLog()
    for i, p in enumerate(prompts):
        eng.add_request(Request(f"r{i}", p, SP, tenant_id=f"t{i % 2}", model=f"m{i % 2}"))
    while eng.has_unfinished():
        eng.step()
    assert [eng.output_token_ids(f"r{i}") for i in range(len(prompts))] == refs
    assert eng.num_failed_admissions == 0 and eng.strategy.num_rounds >= 2
    for plan in log.plans:
        forwards = [r for r in plan.request_ids if r not in plan.ir_graph.preempt]
        assert len({int(r[1:]) % 2 for r in forwards}) <= 1, plan.plan_id  # one model a step


def test_plans_over_blocks_over_quota_or_on_finished_requests_are_rejected(reference):
    folder, prompts, refs = reference
    eng = NativeEngine.from_pretrained(
        folder, block_size_tokens=4, num_kv_blocks=12, tenant_quotas={"q": {"hard_blocks": 7}}
    )
    api = ExecutorAPI([NativePlanTarget(eng)])
    long = prompts[3]  # 26 tokens: 7 blocks each
    eng.add_request(Request("big", long, SP))
    eng.add_request(Request("big2", long, SP))
    for k in (1, 2):  # 17 tokens: 5 blocks each, 10 > tenant q's 7
        eng.add_request(Request(f"tq{k}", prompts[1], SP, tenant_id="q"))
    both = StepDecision((("big", len(long)), ("big2", len(long))))
    plan = ExecutionPlan.of("p-blocks", IRBuilder().build(both, eng.snapshot()), "native-0")
    st = api.submit_plan(plan)
    assert st.state == "rejected" and "plan needs 14 new KV blocks, 12 are free" in st.reason
    quota = StepDecision((("tq1", 17), ("tq2", 17)))
    plan = ExecutionPlan.of("p-quota", IRBuilder().build(quota, eng.snapshot()), "native-0")
    st = api.submit_plan(plan)
    assert st.state == "rejected" and "tenant 'q', its hard quota leaves 7" in st.reason
    # the engine keeps serving: big runs to the oracle's answer, then a plan naming it is refused
    one = StepDecision((("big", len(long)),))
    first = ExecutionPlan.of("p-ok", IRBuilder().build(one, eng.snapshot()), "native-0")
    assert api.submit_and_run(first)[0].state == "completed"
    for rid in ("big2", "tq1", "tq2"):
        eng.abort(rid)
    while eng.has_unfinished():
        eng.step()
    assert eng.output_token_ids("big") == refs[3]
    st = api.submit_plan(ExecutionPlan.of("p-done", first.ir_graph, "native-0"))
    assert st.state == "rejected" and "unknown or finished request ids ['big']" in st.reason
