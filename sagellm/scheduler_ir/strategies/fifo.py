"""fifo: first come, first served; running requests before waiting ones (vLLM's default)."""

from __future__ import annotations

from sagellm.scheduler_ir.strategies.base import RankingStrategy
from sagellm.scheduler_ir.strategies.registry import STRATEGIES
from sagellm.scheduler_ir.types import RequestView, SchedulerState


@STRATEGIES.register("fifo")
class FifoStrategy(RankingStrategy):
    """Rank by (not running, arrival, request id). Preempts only to let running requests grow."""

    name = "fifo"

    def rank(self, state: SchedulerState) -> list[RequestView]:
        return sorted(state.requests, key=lambda r: (not r.running, r.arrival_s, r.request_id))
