"""The mechanism every ranking strategy shares: fill one step's budget in rank order.

A strategy only ranks the unfinished requests (a policy); :func:`fill_budget` does the
bookkeeping (vLLM v1 style): walk the ranking, give each request its pending tokens (1 when
decoding, a chunk when prefilling) within the token budget, ``max_num_seqs`` seats and free KV
blocks. When a request needs blocks (or a seat) that are not free, the lowest-ranked running
request not yet scheduled is preempted (recompute later) if ``can_preempt(victim, requester)``;
a running request that still cannot grow is itself preempted; a waiting one that cannot be
admitted closes admission for this step (back-pressure, no starvation by overtaking).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from sagellm.scheduler_ir.types import RequestView, SchedulerState, StepDecision


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


def fill_budget(
    state: SchedulerState,
    ranked: list[RequestView],
    can_preempt: Callable[[RequestView, RequestView], bool],
    note: str = "",
) -> StepDecision:
    """The decision that serves ``ranked`` (best first) as far as the limits allow."""
    bs = state.block_size_tokens
    budget = state.max_num_batched_tokens
    free = state.num_free_blocks
    seats = state.max_num_seqs - sum(r.running for r in state.requests)
    items: list[tuple[str, int]] = []
    done: set[str] = set()
    preempted: list[str] = []
    admit_open = True
    for pos, r in enumerate(ranked):
        if budget <= 0:
            break
        if r.request_id in done or r.request_id in preempted:
            continue
        if not r.running and not admit_open:
            continue
        n = min(r.num_pending_tokens, budget)
        if n == 0:
            continue
        need = max(0, blocks_for(r.num_computed_tokens + n, bs) - r.num_blocks)
        need_seat = 0 if r.running else 1
        victims = [
            v
            for v in reversed(ranked[pos + 1 :])
            if v.running and v.request_id not in done and v.request_id not in preempted
        ]
        while (need > free or need_seat > seats) and victims:
            v = victims.pop(0)
            if not can_preempt(v, r):
                break
            preempted.append(v.request_id)
            free += v.num_blocks
            seats += 1
        if need > free or need_seat > seats:
            if r.running:
                preempted.append(r.request_id)
                free += r.num_blocks
                seats += 1
            else:
                admit_open = False
            continue
        items.append((r.request_id, n))
        done.add(r.request_id)
        budget -= n
        free -= need
        seats -= need_seat
    return StepDecision(tuple(items), tuple(preempted), note)


class RankingStrategy(abc.ABC):
    """Base of the strategies that are one ranking: subclasses implement ``rank``.

    ``can_preempt`` defaults to vLLM's rule: only a running request that must grow may evict
    (the lowest-ranked running one); waiting requests wait.
    """

    name = "ranking"
    needs_prefix_info = False

    @abc.abstractmethod
    def rank(self, state: SchedulerState) -> list[RequestView]:
        """Waiting and running requests, most important first."""

    def can_preempt(self, victim: RequestView, requester: RequestView) -> bool:
        return requester.running

    def decide(self, state: SchedulerState) -> StepDecision:
        return fill_budget(state, self.rank(state), self.can_preempt, self.name)

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:  # noqa: B027
        """Ranking by static keys learns nothing from step times."""
