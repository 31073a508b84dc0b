"""How the native engine runs a step: every step is a scheduling-IR plan, executed node by node.

``NativeEngine.step()`` (this mixin's :meth:`PlanExecution.step`)::

    state    = snapshot()                 read-only views: queues, KV, quotas, prefix hits
    decision = strategy.decide(state)     tokens per request, preemptions (fifo by default)
    plan     = optimizer(builder(decision, state))     an ExecutionPlan
    execute_plan(plan):
        preempt          drop the victims' KV (they recompute; their cached blocks may hit)
        kv_load          admission's cache half (``NativeKVManager.acquire_prefix``): share
                         the hit's device blocks, load host/disk blocks back; hoisted loads of
                         ``overlap`` nodes run on a worker thread during this step's forward
        forward          admission's allocation half (quota charge, blocks for the new tokens,
                         a waiting request without a hit starts here), then one batched
                         forward over the paged KV cache
        kv_store         index the blocks the forward completed (prefix caching)
        sample           next tokens, streamed as RequestOutputs

With ``num_decode_steps`` k > 1, a forward of only greedy decodes (at most 16 sequences) runs
up to k steps in one C++ call (decode_burst.py); its sample node appends each step's tokens.

With ``accel.speculative_tokens`` set, the drafter proposes tokens for the decision's decoding
requests before the build (``speculative.SpeculativeSteps``): such a request's forward item is
a ``verify`` chunk (pending token + drafts; logits at every position), and its sample node
verifies, appends the accepted tokens and rolls its KV back to them.

An external plan (``ExecutorAPI`` through :class:`NativePlanTarget`) takes the same path after
:meth:`check_plan`; a replayed plan log gives identical tokens. Every planned cache hit is
pinned before the plan's first admission, so one request's allocation cannot evict what a
later request of the same plan was promised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch

from sagellm.core.errors import PlanRejectedError, SchedulingStalledError
from sagellm.core.types import RequestId, RequestOutput, StepMetrics
from sagellm.engines.native.batch_inputs import build_inputs
from sagellm.engines.native.decode_burst import DecodeBursts
from sagellm.engines.native.kv_admission import PendingLoad
from sagellm.engines.native.kv_manager import AllocStatus
from sagellm.engines.native.plan_check import UNSUPPORTED, PlanChecks, plan_items
from sagellm.engines.native.prefill_dedup import defer_shared_prefills
from sagellm.engines.native.sampler import sample
from sagellm.engines.native.sequence import SeqStatus, Sequence
from sagellm.engines.native.speculative import SpeculativeSteps
from sagellm.engines.native.tp_plan import ModelForward
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.plan import ExecutionPlan
from sagellm.scheduler_ir.strategies.base import blocks_for
from sagellm.scheduler_ir.types import FORWARD_TYPES, IRNode, RequestView, SchedulerState


@dataclass
class _StepRun:
    """What one plan's execution has done so far (per-forward logits live until sampled)."""

    t0: float
    schedule_s: float
    outputs: list[RequestOutput] = field(default_factory=list)
    logits: dict[RequestId, tuple[torch.Tensor, int]] = field(default_factory=dict)
    verify: dict[RequestId, torch.Tensor] = field(default_factory=dict)  # rows [1 + k, V]
    # a multi-step burst's (tokens, each token's time) per request (decode_burst.py)
    bursts: dict[RequestId, tuple[list[int], list[float]]] = field(default_factory=dict)
    pending: list[PendingLoad] = field(default_factory=list)
    dropped: set[RequestId] = field(default_factory=set)  # admission failed: not this step
    kv_load_s: float = 0.0  # synchronous load time not yet put in a step's metrics
    pins: list[int] = field(default_factory=list)
    graph: IRGraph | None = None  # the plan's graph (TP: its all_reduce nodes)
    step: StepMetrics | None = None  # the metrics of this plan's last forward
    num_preempted: int = 0  # not yet put in a step's metrics


def _request_ids(node: IRNode) -> list[str]:
    rids = node.get("request_ids")
    return [str(r) for r in rids] if rids is not None else [str(node.get("request_id"))]


class PlanExecution(SpeculativeSteps, DecodeBursts, ModelForward, PlanChecks):
    """The plan path of :class:`~sagellm.engines.native.engine.NativeEngine` (a mixin: it
    works on the engine's queues, KV manager, model, strategy, builder and optimizer)."""

    # ------------------------------------------------------------------ snapshot

    def _view(self, s: Sequence) -> RequestView:
        r, m = s.request, s.metrics
        running = s.status is SeqStatus.RUNNING
        hit, lower, shared = (0, 0, 0) if running else self.kv.peek_prefix(s)
        return RequestView(
            request_id=s.request_id,
            arrival_s=m.arrival_s,
            num_prompt_tokens=s.num_prompt_tokens,
            num_tokens=len(s.token_ids),
            num_computed_tokens=s.num_computed_tokens,
            num_output_tokens=s.num_output_tokens,
            max_tokens=r.sampling.max_tokens,
            running=running,
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
            num_lower_tier_hit_tokens=lower,
            num_shared_hit_blocks=shared,
        )

    def snapshot(self) -> SchedulerState:
        """Read-only views of the unfinished requests (waiting ones with their prefix-cache
        hit, looked up in this engine's PrefixReuseIndex) and this engine's limits."""
        cfg, kv = self.config, self.kv
        views = tuple(self._view(s) for s in self.queues.sequences())
        rooms = []
        for t in sorted({v.tenant_id for v in views}):
            hard = kv.quota.quota(t).hard_blocks
            if hard is not None:
                rooms.append((t, hard - kv.quota.usage_blocks(t)))
        return SchedulerState(
            instance_id=self.instance_id,
            now_s=self.clock(),
            requests=views,
            block_size_tokens=cfg.block_size_tokens,
            num_free_blocks=kv.num_available_blocks,
            num_total_blocks=kv.num_blocks,
            max_num_seqs=cfg.max_num_seqs,
            max_num_batched_tokens=cfg.max_num_batched_tokens,
            step_index=self._num_plans,
            tenant_free_blocks=tuple(rooms),
            chunked_prefill=cfg.enable_chunked_prefill,
            tp_size=cfg.tp_size,
            hidden_bytes_per_token=self.arch.hidden_size * self.dtype.itemsize,
            num_layers=self.arch.num_layers,
        )

    def make_plan(self) -> tuple[ExecutionPlan, SchedulerState]:
        """The configured strategy's plan for the next step."""
        state = self.snapshot()
        decision = self.strategy.decide(state)
        decision = defer_shared_prefills(decision, state, self._seq_map(), self.kv)
        drafts = self._draft_tokens(decision, state)  # {} unless speculative decoding is on
        graph = self.optimizer.optimize(self.builder.build(decision, state, drafts))
        plan = ExecutionPlan.of(f"{self.instance_id}-{self._num_plans}", graph, self.instance_id)
        self._num_plans += 1
        return plan, state

    # ------------------------------------------------------------------ the step

    def step(self, plan: ExecutionPlan | None = None) -> list[RequestOutput]:
        """Run one step: the configured strategy's plan, or ``plan`` (checked first; a plan
        that cannot run raises :class:`PlanRejectedError` and changes nothing). Returns this
        step's streaming deltas (plus the final outputs of requests aborted since)."""
        c0, w0 = self.clock(), time.perf_counter()
        if plan is None:
            plan, state = self.make_plan()
        else:
            reason = self.check_plan(plan)
            if reason is not None:
                raise PlanRejectedError(f"plan {plan.plan_id!r}: {reason}")
            state = None
        w1 = time.perf_counter()
        n_steps = len(self._steps)
        outputs = self._run(plan, c0)
        w2 = time.perf_counter()
        self.plan_s += w1 - w0
        self.execute_s += w2 - w1
        if state is not None:
            self._watch_progress(plan, state)
            new = self._steps[n_steps:]
            if new:
                pre = sum(s.num_prefill_tokens for s in new)
                dec = sum(s.num_decode_tokens for s in new)
                self.strategy.observe(pre, dec, w2 - w1)
        return outputs

    def ir_stats(self) -> dict[str, float]:
        """Wall seconds making plans (snapshot + strategy + build + optimize) vs executing
        them, cumulative since the engine started (``reset_metrics`` keeps them: take the
        difference of two readings for one run)."""
        total = self.plan_s + self.execute_s
        return {
            "ir_s": self.plan_s,
            "execute_s": self.execute_s,
            "ir_fraction": self.plan_s / total if total > 0 else 0.0,
            "num_plans": float(self._num_plans),
        }

    def _watch_progress(self, plan: ExecutionPlan, state: SchedulerState) -> None:
        """Count steps in which the strategy gave no work while requests wait and nothing
        runs; past ``max_empty_steps`` raise instead of spinning."""
        idle = not plan.ir_graph.nodes and not self.queues.running and self.queues.waiting
        self._empty_steps = self._empty_steps + 1 if idle else 0
        if self._empty_steps > self.config.max_empty_steps:
            raise SchedulingStalledError(
                f"strategy {self.strategy.name!r} returned an empty decision for "
                f"{self._empty_steps} steps while {len(self.queues.waiting)} requests wait "
                f"and none runs ({len(state.requests)} in its last snapshot)"
            )

    def execute_plan(self, plan: ExecutionPlan) -> list[RequestOutput]:
        """Execute a plan that passed :meth:`check_plan`; returns the step's outputs."""
        return self._run(plan, self.clock())

    def _run(self, plan: ExecutionPlan, t0: float) -> list[RequestOutput]:
        run = _StepRun(t0=t0, schedule_s=self.clock() - t0, graph=plan.ir_graph)
        self._execute(plan, run)
        if self.plan_log is not None:
            self.plan_log.plan(plan)
        outputs, self._pending_outputs = self._pending_outputs + run.outputs, []
        return outputs

    def _execute(self, plan: ExecutionPlan, run: _StepRun) -> None:
        graph = plan.ir_graph
        seqs = self._seq_map()
        for rid in graph.preempt:
            self.queues.preempt(seqs[rid])
        run.num_preempted = len(graph.preempt)
        loads = [n for n in graph.nodes if n.node_type == "kv_load"]
        run.pins = self.kv.pin([seqs[str(n.get("request_id"))] for n in loads])
        try:
            for node in graph.topological_order():
                kind = node.node_type
                if kind == "kv_load":
                    self._kv_load(node, seqs[str(node.get("request_id"))], run)
                elif kind in FORWARD_TYPES:
                    self._forward(node, seqs, run)
                elif kind == "kv_store":
                    for rid in _request_ids(node):
                        if rid not in run.dropped and seqs[rid].status is SeqStatus.RUNNING:
                            self.kv.commit(seqs[rid])
                elif kind == "sample":
                    self._sample(node, seqs, run)
                elif kind == "all_reduce" and self.tp is not None:
                    continue  # issued inside the forward producing its partials (tp_plan)
                else:
                    raise PlanRejectedError(f"node {node.node_id!r}: {UNSUPPORTED[kind]}")
        finally:
            self._join_loads(run)
            self.kv.unpin(run.pins)
            for s in seqs.values():
                s.draft = None  # a draft lives one step (its verify may have been dropped)
        threshold = self.config.defrag_fragmentation_threshold
        if threshold is not None and self.kv.pool.get_fragmentation() > threshold:
            self.defragment()

    def _seq_map(self) -> dict[RequestId, Sequence]:
        return {s.request_id: s for s in self.queues.sequences()}

    # ------------------------------------------------------------------ node kinds

    def _kv_load(self, node: IRNode, seq: Sequence, run: _StepRun) -> None:
        """Admission's cache half for a waiting request (see NativeKVManager.acquire_prefix)."""
        planned = int(node.get("num_tokens"))
        async_ok = bool(node.get("overlap")) and bool(node.get("hoisted"))
        try:
            pending = self.kv.acquire_prefix(seq, planned, overlap=async_ok)
        except PlanRejectedError:
            run.dropped.add(seq.request_id)  # e.g. the hit moved since the snapshot: next step
            self.num_failed_admissions += 1
            return
        self._start(seq)
        if async_ok:
            run.pending.append(pending)
            return
        got = self.kv.finish_load(pending)
        run.kv_load_s += pending.load_s  # synchronous: all of it exposed
        self._loaded(seq, got, planned, run)

    def _loaded(self, seq: Sequence, got: int, planned: int, run: _StepRun) -> None:
        if got < planned:  # a host/disk read failed: it recomputes from a shorter hit later
            self.queues.unadmit(seq)
            run.dropped.add(seq.request_id)
            return
        if seq.metrics.preemptions == 0:
            seq.metrics.num_cached_tokens = got
            self.kv.record_admission(seq, got)

    def _start(self, seq: Sequence) -> None:
        if seq.status is SeqStatus.WAITING:
            self.queues.start(seq)
        if seq.metrics.scheduled_s is None:
            seq.metrics.scheduled_s = self.clock()

    def _join_loads(self, run: _StepRun) -> None:
        """Wait for the overlapped tier loads; the time waited is exposed, the rest hidden
        (both added to the step's metrics when the step ran a forward)."""
        for p in run.pending:
            got = self.kv.finish_load(p)
            if run.step is not None:
                self._amend_step(
                    run,
                    kv_load_s=run.step.kv_load_s + p.wait_s,
                    kv_load_hidden_s=run.step.kv_load_hidden_s + p.load_s - p.wait_s,
                )
            self._loaded(p.seq, got, p.entries[-1].token_length, run)
        run.pending.clear()

    def _grow(self, seq: Sequence, start: int, n: int, run: _StepRun) -> bool:
        """Admission's allocation half (and a running request's growth): blocks for tokens
        ``[start, start + n)``. False, with the request left out of this step, when the pool or
        the tenant's quota refuses (only an unchecked plan gets here)."""
        if seq.status is SeqStatus.WAITING:
            if start != 0:
                run.dropped.add(seq.request_id)
                return False
            self._start(seq)
            if seq.metrics.preemptions == 0:
                seq.metrics.num_cached_tokens = 0
                self.kv.record_admission(seq, 0)
        need = blocks_for(start + n, self.config.block_size_tokens) - len(seq.block_ids)
        status = self.kv.allocate(seq, max(0, need))
        if status is AllocStatus.OK and self.kv.ensure_writable(seq):
            return True
        self.num_failed_admissions += 1
        if seq.num_computed_tokens == 0 or seq.num_computed_tokens < seq.num_prompt_tokens:
            self.queues.unadmit(seq)
        else:
            self.queues.preempt(seq)
        run.dropped.add(seq.request_id)
        return False

    def _forward(self, node: IRNode, seqs: dict[RequestId, Sequence], run: _StepRun) -> None:
        t0 = self.clock()
        items = []
        drafts: dict[RequestId, list[int]] = {}
        for rid, start, n in plan_items(node):
            seq = seqs[rid]
            d = seq.draft.token_ids if seq.draft is not None else []
            verify = bool(d) and n == 1 + len(d) and seq.num_pending_tokens == 1
            pending = n - len(d) if verify else n
            if rid in run.dropped or start != seq.num_computed_tokens:
                run.dropped.add(rid)
                continue
            if pending > seq.num_pending_tokens:  # a verify item without its draft
                run.dropped.add(rid)
                continue
            if self._grow(seq, start, n, run):
                items.append((seq, n))
                if verify:
                    drafts[rid] = d
        if not items:
            return
        steps = self._burst_steps(items, drafts)
        if steps > 1 and self._run_burst(items, steps, run, t0):
            return
        inputs = build_inputs(
            items,
            self.config.block_size_tokens,
            self.model.num_kv_heads,
            self.device,
            drafts,
            sparse=self.sparse,
            wire=self.tp is not None,
        )
        t1 = self.clock()
        try:
            logits, comm_s = self._model_forward(node, items, inputs, run)
        except RuntimeError as err:  # e.g. out of memory: fail these requests, keep serving
            run.outputs.extend(self._fail([s for s, _ in items], err))
            run.dropped.update(s.request_id for s, _ in items)
            return
        t2 = self.clock()
        for seq, n in items:  # drafts' KV is written but counts only once verified
            seq.num_computed_tokens += n - len(drafts.get(seq.request_id, ()))
        if self.sparse is not None:
            self.sparse.after_forward([s for s, _ in items], self.kv)
        j = 0
        for seq, k in zip(inputs.sampled_seqs, inputs.num_logits, strict=True):
            if seq.request_id in drafts:
                run.verify[seq.request_id] = logits[j : j + k]
            else:
                run.logits[seq.request_id] = (logits, j)
            j += k
        row = j
        for seq, first, k in inputs.scored:  # by position: a recompute overwrites, never adds
            for i in range(k):
                seq.scored_logits[first + i] = logits[row + i].to("cpu", copy=True)
            row += k
        schedule_s, run.schedule_s = run.schedule_s + (t1 - t0), 0.0
        kv_load_s, run.kv_load_s = run.kv_load_s, 0.0
        run.step = self._step_metrics(items, inputs, run.t0, schedule_s, t2 - t1, kv_load_s)
        n_drafts = sum(len(d) for d in drafts.values())
        run.step = replace(
            run.step, num_preempted=run.num_preempted, num_draft_tokens=n_drafts, comm_s=comm_s
        )
        run.num_preempted = 0
        self._steps.append(run.step)
        run.t0 = t2

    def _sample(self, node: IRNode, seqs: dict[RequestId, Sequence], run: _StepRun) -> None:
        t0 = self.clock()
        rids = _request_ids(node)
        rows = [(seqs[r], run.logits.pop(r)) for r in rids if r in run.logits]
        verify = [(seqs[r], run.verify.pop(r)) for r in rids if r in run.verify]
        bursts = [(seqs[r], run.bursts.pop(r)) for r in rids if r in run.bursts]
        if not rows and not verify and not bursts:
            return
        for seq, (tokens, times_s) in bursts:
            run.outputs.append(self._emit_burst(seq, tokens, times_s))
        by_tensor: dict[int, list] = {}
        for seq, (lg, j) in rows:
            by_tensor.setdefault(id(lg), [lg, [], []])
            by_tensor[id(lg)][1].append(j)
            by_tensor[id(lg)][2].append(seq)
        now = self.clock() if bursts else None
        for lg, js, group in by_tensor.values():
            picked = lg if js == list(range(lg.shape[0])) else lg[js]
            tokens = sample(
                picked, [s.request.sampling for s in group], [s.generator for s in group]
            )
            now = self.clock()
            if self.record_logits:
                for k, seq in enumerate(group):
                    self.recorded_logits.setdefault(seq.request_id, []).append(picked[k].cpu())
            for seq, tok in zip(group, tokens, strict=True):
                run.outputs.append(self._append_token(seq, tok, now))
        accepted = 0
        for seq, lg in verify:
            before = self.spec_stats.num_accepted_tokens
            run.outputs.append(self._verify_one(seq, lg, self.clock()))
            accepted += self.spec_stats.num_accepted_tokens - before
            now = self.clock()
        if run.step is not None:
            self._amend_step(
                run,
                sample_s=run.step.sample_s + now - t0,
                num_accepted_tokens=run.step.num_accepted_tokens + accepted,
            )

    def _amend_step(self, run: _StepRun, **changes) -> None:
        """Update the metrics of this plan's last forward (the newest step record)."""
        run.step = replace(run.step, **changes)
        self._steps[-1] = run.step


class NativePlanTarget:
    """A :class:`NativeEngine` as an :class:`~sagellm.scheduler_ir.ExecutorAPI` instance:
    submitted plans are checked and executed on the engine's one path."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.instance_id = engine.instance_id

    def snapshot(self) -> SchedulerState:
        return self.engine.snapshot()

    def check(self, plan: ExecutionPlan) -> str | None:
        return self.engine.check_plan(plan)

    def execute(self, plan: ExecutionPlan) -> list[RequestOutput]:
        return self.engine.execute_plan(plan)
