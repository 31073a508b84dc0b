"""hybrid: SLO classes first, cache-aware longest-prefix-match inside each class.

A request's class is ``(-priority, ttft_slo_s)`` (tighter TTFT objective = more urgent class;
no objective ranks last). Inside a class the ranking is :func:`lpm_key`: running first, then
the longest cached prefix, then FCFS. This keeps interactive traffic ahead of batch traffic
while still batching requests that share a cached prefix.
"""

from __future__ import annotations

import math

from sagellm.scheduler_ir.strategies.base import RankingStrategy
from sagellm.scheduler_ir.strategies.lpm import lpm_key
from sagellm.scheduler_ir.strategies.registry import STRATEGIES
from sagellm.scheduler_ir.types import RequestView, SchedulerState


def slo_class(r: RequestView) -> tuple[int, float]:
    return (-r.priority, r.ttft_slo_s if r.ttft_slo_s is not None else math.inf)


@STRATEGIES.register("hybrid")
class HybridStrategy(RankingStrategy):
    name = "hybrid"

    def rank(self, state: SchedulerState) -> list[RequestView]:
        return sorted(state.requests, key=lambda r: (slo_class(r), lpm_key(r)))
