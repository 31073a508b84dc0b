"""lpm: cache-aware longest-prefix-match ordering (SGLang's LPM schedule policy, Zheng et al.,
"SGLang: Efficient Execution of Structured Language Model Programs", NeurIPS'24).

Running requests first (FCFS); waiting requests by the number of prompt tokens whose KV is
already cached (``RequestView.num_prefix_hit_tokens``, longest first), then FCFS. Serving
requests that share cached prefixes together keeps those prefixes resident.
"""

from __future__ import annotations

from sagellm.scheduler_ir.strategies.base import RankingStrategy
from sagellm.scheduler_ir.strategies.registry import STRATEGIES
from sagellm.scheduler_ir.types import RequestView, SchedulerState


def lpm_key(r: RequestView) -> tuple:
    return (not r.running, -r.num_prefix_hit_tokens, r.arrival_s, r.request_id)


@STRATEGIES.register("lpm")
class LpmStrategy(RankingStrategy):
    name = "lpm"

    def rank(self, state: SchedulerState) -> list[RequestView]:
        return sorted(state.requests, key=lpm_key)
