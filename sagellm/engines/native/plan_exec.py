"""The native engine as a scheduling-IR :class:`~sagellm.scheduler_ir.protocol.PlanTarget`.

``snapshot`` exposes the engine's unfinished requests as read-only views; ``check`` validates a
plan against them (without changing anything); ``execute`` applies the plan's preemptions and
runs one engine forward per forward wave, through ``Scheduler.apply_plan`` and
``NativeEngine.step(batch)``. A request's KV start in the plan must equal what the engine has
computed (after the plan's own preemptions and earlier waves), so a plan replays exactly.
"""

from __future__ import annotations

from sagellm.core.types import RequestId, RequestOutput
from sagellm.engines.native.engine import NativeEngine
from sagellm.engines.native.sequence import SeqStatus, Sequence
from sagellm.scheduler_ir.plan import ExecutionPlan, lower
from sagellm.scheduler_ir.types import RequestView, SchedulerState

_UNSUPPORTED = {
    "verify": "speculative decoding (verify nodes)",
    "all_reduce": "tensor parallelism (all_reduce nodes; tp_size is 1)",
    "kv_transfer": "kv_transfer nodes (run them through PDRuntime)",
}


def _block_hashes(tokens: list[int], n: int, bs: int) -> list[int]:
    """Chained hashes of the first ``n // bs`` full blocks of ``tokens``."""
    out, h = [], 0
    for b in range(n // bs):
        h = hash((h, tuple(tokens[b * bs : (b + 1) * bs])))
        out.append(h)
    return out


class NativePlanTarget:
    """Wraps a :class:`NativeEngine` so an :class:`ExecutorAPI` can drive it by plans."""

    def __init__(self, engine: NativeEngine, instance_id: str = "native-0") -> None:
        self.engine = engine
        self.instance_id = instance_id
        self._lowered: tuple[ExecutionPlan, list] | None = None  # check -> execute reuse

    def _lower(self, plan: ExecutionPlan) -> list:
        if self._lowered is None or self._lowered[0] is not plan:
            self._lowered = (plan, lower(plan.ir_graph))
        return self._lowered[1]

    # ------------------------------------------------------------------ state

    def sequences(self) -> dict[RequestId, Sequence]:
        sch = self.engine.scheduler
        return {s.request_id: s for s in [*sch.running, *sch.waiting]}

    def snapshot(self, with_prefix: bool = False) -> SchedulerState:
        eng, sch = self.engine, self.engine.scheduler
        bs = eng.config.block_size_tokens
        cached: set[int] = set()
        if with_prefix:
            for s in sch.running:
                cached.update(_block_hashes(s.token_ids, s.num_computed_tokens, bs))
        views = []
        for s in [*sch.running, *sch.waiting]:
            hit = 0
            if with_prefix:
                for h in _block_hashes(s.token_ids, s.num_prompt_tokens, bs):
                    if h not in cached:
                        break
                    hit += bs
            views.append(self._view(s, hit))
        return SchedulerState(
            instance_id=self.instance_id,
            now_s=eng.clock(),
            requests=tuple(views),
            block_size_tokens=bs,
            num_free_blocks=eng.scheduler.allocator.num_free,
            num_total_blocks=eng.scheduler.allocator.num_blocks,
            max_num_seqs=eng.config.max_num_seqs,
            max_num_batched_tokens=eng.config.max_num_batched_tokens,
            step_index=len(eng.step_metrics()),
        )

    @staticmethod
    def _view(s: Sequence, hit: int) -> RequestView:
        r, m = s.request, s.metrics
        return RequestView(
            request_id=s.request_id,
            arrival_s=m.arrival_s,
            num_prompt_tokens=s.num_prompt_tokens,
            num_tokens=len(s.token_ids),
            num_computed_tokens=s.num_computed_tokens,
            num_output_tokens=s.num_output_tokens,
            max_tokens=r.sampling.max_tokens,
            running=s.status is SeqStatus.RUNNING,
            num_blocks=len(s.block_ids),
            priority=r.priority,
            ttft_slo_s=r.slo.ttft_s,
            tpot_slo_s=r.slo.tpot_s,
            tenant_id=r.tenant_id,
            model=r.model,
            first_token_s=m.first_token_s,
            last_token_s=m.token_times_s[-1] if m.token_times_s else None,
            num_preemptions=m.preemptions,
            num_prefix_hit_tokens=hit,
        )

    # ------------------------------------------------------------------ plans

    def check(self, plan: ExecutionPlan) -> str | None:
        """Why ``plan`` cannot run on this instance now, or None."""
        if plan.target_instance_id != self.instance_id:
            return f"plan targets {plan.target_instance_id!r}, this is {self.instance_id!r}"
        for n in plan.ir_graph.nodes:
            if n.node_type in _UNSUPPORTED:
                what = _UNSUPPORTED[n.node_type]
                return f"node {n.node_id!r}: the native engine does not run {what}"
        try:
            waves = self._lower(plan)
        except ValueError as err:  # a cycle
            return str(err)
        seqs = self.sequences()
        missing = [r for r in plan.request_ids if r not in seqs]
        if missing:
            return f"unknown or finished request ids {missing[:5]} on {self.instance_id!r}"
        computed = {rid: s.num_computed_tokens for rid, s in seqs.items()}
        for rid in plan.ir_graph.preempt:
            if seqs[rid].status is not SeqStatus.RUNNING:
                return f"preempt names {rid!r}, which is not running"
            computed[rid] = 0
        cfg = self.engine.config
        for w, items in enumerate(waves):
            if len({i.request_id for i in items}) != len(items):
                return f"forward wave {w} lists a request twice"
            if sum(i.num_tokens for i in items) > cfg.max_num_batched_tokens:
                cap = cfg.max_num_batched_tokens
                return f"forward wave {w} exceeds max_num_batched_tokens={cap}"
            for i in items:
                s = seqs[i.request_id]
                if i.start_tokens != computed[i.request_id]:
                    return (
                        f"request {i.request_id!r}: plan starts at token {i.start_tokens}, "
                        f"the engine has {computed[i.request_id]} computed"
                    )
                if i.num_tokens < 1 or i.start_tokens + i.num_tokens > len(s.token_ids):
                    return f"request {i.request_id!r}: {i.num_tokens} tokens is not pending"
                computed[i.request_id] += i.num_tokens
        return self._check_capacity(waves, seqs, set(plan.ir_graph.preempt))

    def _check_capacity(self, waves, seqs, preempt: set[RequestId]) -> str | None:
        eng = self.engine
        running = {r for r, s in seqs.items() if s.status is SeqStatus.RUNNING} - preempt
        touched = running | {i.request_id for items in waves for i in items}
        if len(touched) > eng.config.max_num_seqs:
            return f"{len(touched)} running requests exceed max_num_seqs={eng.config.max_num_seqs}"
        bs = eng.config.block_size_tokens
        end: dict[RequestId, int] = {}
        for items in waves:
            for i in items:
                end[i.request_id] = i.start_tokens + i.num_tokens
        need = 0
        for rid, e in end.items():
            held = 0 if rid in preempt else len(seqs[rid].block_ids)
            need += max(0, -(-e // bs) - held)
        free = eng.scheduler.allocator.num_free + sum(len(seqs[r].block_ids) for r in preempt)
        if need > free:
            return f"plan needs {need} new KV blocks, {free} are free"
        return None

    def execute(self, plan: ExecutionPlan) -> list[RequestOutput]:
        eng = self.engine
        waves = self._lower(plan)
        seqs = self.sequences()
        preempt = [seqs[r] for r in plan.ir_graph.preempt]
        outputs: list[RequestOutput] = []
        if not waves:
            batch = eng.scheduler.apply_plan([], preempt)
            return eng.step(batch)
        for w, items in enumerate(waves):
            batch = eng.scheduler.apply_plan(
                [(seqs[i.request_id], i.num_tokens) for i in items], preempt if w == 0 else []
            )
            if batch is None:
                raise RuntimeError(f"plan {plan.plan_id!r} passed check but blocks ran out")
            outputs.extend(eng.step(batch))
        return outputs
