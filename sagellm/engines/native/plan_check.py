"""``check_plan``: whether an external plan (``ExecutorAPI`` / replay) can run on this native
engine now, checked without changing anything (a mixin of ``NativeEngine`` through
``PlanExecution``). Node kinds the engine cannot run are rejected with the reason; request
starts must match computed tokens (or a planned cache hit); waves must fit the token budget and
seats; blocks and tenants' hard quotas must hold what admission will take.
"""

from __future__ import annotations

import math

from sagellm.core.types import RequestId
from sagellm.engines.native.sequence import SeqStatus
from sagellm.engines.native.tp_plan import check_reductions
from sagellm.scheduler_ir.graph import IRGraph
from sagellm.scheduler_ir.plan import ExecutionPlan
from sagellm.scheduler_ir.strategies.base import blocks_for
from sagellm.scheduler_ir.types import FORWARD_TYPES, IRNode

# node kinds the engine cannot run yet, and why (check_plan rejects them with the reason);
# all_reduce nodes run only with tp_size > 1
UNSUPPORTED = {
    "all_reduce": "all_reduce nodes with tp_size 1 (there is nothing to reduce)",
    "kv_transfer": "kv_transfer nodes (run them through PDRuntime)",
}


def plan_items(node: IRNode) -> list[tuple[str, int, int]]:
    """``(request_id, start, num_tokens)`` of a forward-like node."""
    if node.node_type == "forward":
        return [(str(r), int(c), int(k)) for r, c, k, *_ in node.get("items")]
    return [
        (str(node.get("request_id")), int(node.get("start_tokens")), int(node.get("num_tokens")))
    ]


class PlanChecks:
    """The plan check of the native engine (see the module docstring)."""

    def check_plan(self, plan: ExecutionPlan) -> str | None:
        """Why ``plan`` cannot run on this engine now (None when it can); changes nothing.

        A running request's chunk must start at its computed tokens; a waiting request's at
        0, or at the tokens its ``kv_load`` takes from the cache (whole blocks the cache holds
        now). Waves must fit the token budget and seats; blocks and tenants' hard quotas must
        hold what admission will take (cache hits counted, as strategies count them).
        """
        if plan.target_instance_id != self.instance_id:
            return f"plan targets {plan.target_instance_id!r}, this is {self.instance_id!r}"
        graph: IRGraph = plan.ir_graph
        for n in graph.nodes:
            kinds = {n.node_type} | {i[3] for i in n.get("items") or () if len(i) > 3}
            if "verify" in kinds:
                return (
                    f"node {n.node_id!r}: verify nodes run only on the engine's own plans "
                    "(their drafts are proposed when the engine makes the plan)"
                )
            if n.node_type == "all_reduce" and self.tp is not None:
                continue
            if n.node_type in UNSUPPORTED:
                return (
                    f"node {n.node_id!r}: the native engine does not run {UNSUPPORTED[n.node_type]}"
                )
        try:
            order = graph.topological_order()
        except ValueError as err:  # a cycle
            return str(err)
        if self.tp is not None:
            reason = check_reductions(graph, self.arch.num_layers)
            if reason is not None:
                return reason
        seqs = self._seq_map()
        missing = [r for r in plan.request_ids if r not in seqs]
        if missing:
            return f"unknown or finished request ids {missing[:5]} on {self.instance_id!r}"
        computed = {rid: s.num_computed_tokens for rid, s in seqs.items()}
        running = {rid for rid, s in seqs.items() if s.status is SeqStatus.RUNNING}
        for rid in graph.preempt:
            if rid not in running:
                return f"preempt names {rid!r}, which is not running"
            computed[rid] = 0
        running -= set(graph.preempt)
        starts: dict[RequestId, int] = {}
        shared: dict[RequestId, int] = {}  # hit blocks running requests hold (no free block)
        cfg, bs = self.config, self.config.block_size_tokens
        for n in order:
            if n.node_type == "kv_load":
                rid, c = str(n.get("request_id")), int(n.get("num_tokens"))
                if rid in running:
                    return f"kv_load of {rid!r}: it is running (its KV is resident)"
                peek = self.kv.peek_prefix(seqs[rid])
                if c % bs or c > peek.num_tokens:
                    held = peek.num_tokens
                    return f"kv_load of {rid!r}: {c} cached tokens planned, the cache holds {held}"
                computed[rid] = starts[rid] = c
                shared[rid] = peek.num_shared_blocks if c == peek.num_tokens else 0
            elif n.node_type in FORWARD_TYPES:
                items = plan_items(n)
                if len({r for r, _, _ in items}) != len(items):
                    return f"forward {n.node_id!r} lists a request twice"
                if sum(k for _, _, k in items) > cfg.max_num_batched_tokens:
                    cap = cfg.max_num_batched_tokens
                    return f"forward {n.node_id!r} exceeds max_num_batched_tokens={cap}"
                for rid, c, k in items:
                    if c != computed[rid]:
                        return (
                            f"request {rid!r}: plan starts at token {c}, the engine has "
                            f"{computed[rid]} computed"
                        )
                    if k < 1 or c + k > len(seqs[rid].token_ids):
                        return f"request {rid!r}: {k} tokens is not pending"
                    starts.setdefault(rid, c)
                    computed[rid] = c + k
        return self._check_capacity(seqs, running, starts, computed, shared, set(graph.preempt))

    def _check_capacity(self, seqs, running, starts, ends, shared, preempt) -> str | None:
        cfg, kv = self.config, self.kv
        seated = running | set(starts)
        if len(seated) > cfg.max_num_seqs:
            return f"{len(seated)} running requests exceed max_num_seqs={cfg.max_num_seqs}"
        bs = cfg.block_size_tokens
        free = kv.num_available_blocks + sum(len(seqs[r].block_ids) for r in preempt)
        need_total, need_tenant = 0, {}
        for rid in starts:
            held = 0 if rid in preempt else len(seqs[rid].block_ids)
            need = max(0, blocks_for(ends[rid], bs) - held)
            need_total += max(0, need - shared.get(rid, 0))
            t = seqs[rid].request.tenant_id
            need_tenant[t] = need_tenant.get(t, 0) + need
        if need_total > free:
            return f"plan needs {need_total} new KV blocks, {free} are free"
        for t, need in need_tenant.items():
            hard = kv.quota.quota(t).hard_blocks
            freed = sum(len(seqs[r].block_ids) for r in preempt if seqs[r].request.tenant_id == t)
            room = math.inf if hard is None else hard - kv.quota.usage_blocks(t) + freed
            if need > room:
                return f"plan needs {need} KV blocks of tenant {t!r}, its hard quota leaves {room}"
        return None
