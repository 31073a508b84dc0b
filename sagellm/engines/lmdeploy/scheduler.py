"""A sagellm ranking strategy as LMDeploy's external scheduling decision (patch 0003).

``Scheduler.set_external_decider(StrategyDecider(...))`` makes LMDeploy admit waiting sequences
in the strategy's order (its token budget and batch limits still apply: it stops at the first
that does not fit) and, when decoding must preempt, take the lowest-ranked running sequence.
Only ranking strategies are honoured (:mod:`sagellm.engines.ordering`). Sequence ids map to
request ids as ``str(seq_id)``; ``request_info`` carries what LMDeploy does not know
(priority, tenant, SLOs) per LMDeploy session id (the adapter runs one sequence per session).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sagellm.engines.ordering import make_state, ranked_ids, ranking_strategy
from sagellm.scheduler_ir import RequestView
from sagellm.scheduler_ir.strategies import RankingStrategy

#: What the LMDeploy adapter honours (named in errors about strategies it cannot run).
LMDEPLOY_CAPABILITIES = frozenset(
    {
        "admission_order",
        "comm_stats_eager",
        "kv_block_info",
        "kv_eviction_callback",
        "kv_migration_plan",
        "preemption_order",
        "prefix_reuse",
    }
)


@dataclass(frozen=True)
class SequenceInfo:
    """Request attributes LMDeploy's sequences lack (for strategies that rank by them)."""

    priority: int = 0
    tenant_id: str = "default"
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None


class StrategyDecider:
    """The ``admit`` / ``victim`` object patch 0003 calls, backed by a ranking strategy."""

    def __init__(self, strategy: RankingStrategy | str, block_size_tokens: int) -> None:
        if isinstance(strategy, str):
            strategy = ranking_strategy(strategy, "lmdeploy", LMDEPLOY_CAPABILITIES)
        self.strategy = strategy
        self.block_size_tokens = block_size_tokens
        self.request_info: dict[int, SequenceInfo] = {}  # by LMDeploy session id
        self.num_decisions = 0
        self._prompt_tokens: dict[int, int] = {}  # seq id -> length when first seen (waiting)

    def _view(self, seq: Any, running: bool) -> RequestView:
        num_tokens = int(seq.num_all_ids)
        prompt = self._prompt_tokens.setdefault(seq.seq_id, num_tokens)
        info = self.request_info.get(seq.session.session_id, SequenceInfo())
        return RequestView(
            request_id=str(seq.seq_id),
            arrival_s=float(seq.arrive_time),
            num_prompt_tokens=min(prompt, num_tokens),
            num_tokens=num_tokens,
            num_computed_tokens=min(int(seq.num_history_ids), num_tokens) if running else 0,
            num_output_tokens=max(0, num_tokens - prompt),
            max_tokens=int(seq.sampling_param.max_new_tokens),
            running=running,
            num_blocks=int(seq.num_blocks) if running else 0,
            priority=info.priority,
            ttft_slo_s=info.ttft_slo_s,
            tpot_slo_s=info.tpot_slo_s,
            tenant_id=info.tenant_id,
        )

    def _rank(self, waiting: list[Any], running: list[Any]) -> list[str]:
        views = [self._view(s, False) for s in waiting] + [self._view(s, True) for s in running]
        state = make_state(views, self.block_size_tokens, 0, 0)
        self.num_decisions += 1
        return ranked_ids(self.strategy, state)

    def admit(self, waiting: list[Any], running: list[Any]) -> tuple[list[Any], list[Any]]:
        """Waiting sequences in the strategy's order; no forced preemption."""
        pos = {rid: i for i, rid in enumerate(self._rank(waiting, running))}
        return sorted(waiting, key=lambda s: pos[str(s.seq_id)]), []

    def victim(self, running: list[Any]) -> int:
        """Index in ``running`` of the lowest-ranked sequence (decoding preempts it)."""
        order = self._rank([], running)
        worst = order[-1]
        return next(i for i, s in enumerate(running) if str(s.seq_id) == worst)
