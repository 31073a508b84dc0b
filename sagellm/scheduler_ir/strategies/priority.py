"""priority: higher ``Request.priority`` first, with preemption of lower-priority requests.

A waiting request may evict running requests of strictly lower priority (lowest priority,
latest arrival first); the evicted request keeps its priority (it is a field of the request,
not of the queue position) and is recomputed when it ranks high enough again. Ties go FCFS.
"""

from __future__ import annotations

from sagellm.scheduler_ir.strategies.base import RankingStrategy
from sagellm.scheduler_ir.strategies.registry import STRATEGIES
from sagellm.scheduler_ir.types import RequestView, SchedulerState


@STRATEGIES.register("priority")
class PriorityStrategy(RankingStrategy):
    name = "priority"

    def rank(self, state: SchedulerState) -> list[RequestView]:
        return sorted(
            state.requests,
            key=lambda r: (-r.priority, not r.running, r.arrival_s, r.request_id),
        )

    def can_preempt(self, victim: RequestView, requester: RequestView) -> bool:
        return victim.priority < requester.priority or (
            requester.running and victim.priority <= requester.priority
        )
