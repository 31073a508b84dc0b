"""slo_aware: least-slack-first over TTFT and TPOT deadlines with predicted service times.

For a request still before its first token, the deadline is ``arrival + ttft_slo`` and the
predicted service is the prefill time of its pending tokens; while decoding, the next token's
deadline keeps the mean TPOT on target, ``first_token + tpot_slo * num_output_tokens``, and the
service is one decode step. ``slack = deadline - now - service``; least slack runs first (EDF
with service times, as in SLO-aware serving schedulers such as Llumnix/SLOs-Serve). A request
that has already missed its TTFT cannot count as good any more, so it ranks after every
request that still can (it still completes). Requests without objectives rank last, FCFS.
"""

from __future__ import annotations

import math

from sagellm.scheduler_ir.strategies.base import RankingStrategy
from sagellm.scheduler_ir.strategies.registry import STRATEGIES
from sagellm.scheduler_ir.strategies.service_time import ServiceTimeModel
from sagellm.scheduler_ir.types import RequestView, SchedulerState


def slack_s(r: RequestView, now_s: float, model: ServiceTimeModel) -> tuple[bool, float]:
    """(already missed TTFT, slack seconds); slack is +inf without an objective."""
    if r.first_token_s is None:
        if r.ttft_slo_s is None:
            return False, math.inf
        deadline = r.arrival_s + r.ttft_slo_s
        service = model.prefill_s(
            r.num_prompt_tokens - min(r.num_computed_tokens, r.num_prompt_tokens)
        )
        return now_s > deadline, deadline - now_s - service
    missed = r.ttft_slo_s is not None and r.first_token_s - r.arrival_s > r.ttft_slo_s
    if r.tpot_slo_s is None:
        return missed, math.inf
    deadline = r.first_token_s + r.tpot_slo_s * r.num_output_tokens
    service = model.decode_step_s if r.running else model.prefill_s(r.num_pending_tokens)
    return missed, deadline - now_s - service


@STRATEGIES.register("slo_aware")
class SloAwareStrategy(RankingStrategy):
    name = "slo_aware"

    def __init__(self, service_model: ServiceTimeModel | None = None) -> None:
        self.model = service_model or ServiceTimeModel()

    def rank(self, state: SchedulerState) -> list[RequestView]:
        keyed = []
        for r in state.requests:
            missed, slack = slack_s(r, state.now_s, self.model)
            keyed.append(((missed, slack, r.arrival_s, r.request_id), r))
        keyed.sort(key=lambda kr: kr[0])
        return [r for _, r in keyed]

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:
        self.model.observe(num_prefill_tokens, num_decode_tokens, step_s)
