"""The mechanism every ranking strategy shares: fill one step's budget in rank order.

A strategy only ranks the unfinished requests (a policy); :func:`fill_budget` does the
bookkeeping (vLLM v1 style): walk the ranking, give each request its pending tokens (1 when
decoding, a chunk when prefilling, starting after a waiting request's cache hit) within the
token budget, ``max_num_seqs`` seats, free KV blocks and the tenant's hard quota.

- A request that needs blocks (or a seat) that are not free preempts the lowest-ranked running
  request not yet scheduled (recompute later) if ``can_preempt(victim, requester)``; under a
  quota shortfall only the same tenant's requests are victims. A running request that still
  cannot grow is itself preempted.
- A waiting request that cannot get blocks closes admission for this step (back-pressure, no
  starvation by overtaking); one whose tenant is at its quota is skipped (only that tenant
  waits). After a running request had to preempt, nothing more is admitted this step.
- Without chunked prefill a prompt whose pending tokens exceed the remaining budget waits
  (and closes admission).

Blocks a request needs: ``ceil((start + n) / B)`` minus the blocks it holds, charged to its
tenant's quota in full; from the free pool, less the hit blocks running requests already hold
(``num_shared_hit_blocks``: sharing them takes no free block; a cached hit block at ref 0 is
counted, as taking it removes it from the free+cached count).
"""

from __future__ import annotations

import abc
import math
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
    room = dict(state.tenant_free_blocks)
    seats = state.max_num_seqs - sum(r.running for r in state.requests)
    items: list[tuple[str, int]] = []
    taken: set[str] = set()  # scheduled or preempted
    preempted: list[str] = []
    admit_open = True

    def evict(v: RequestView) -> None:
        nonlocal free, seats
        preempted.append(v.request_id)
        taken.add(v.request_id)
        free += v.num_blocks
        seats += 1
        if v.tenant_id in room:
            room[v.tenant_id] += v.num_blocks

    for pos, r in enumerate(ranked):
        if budget <= 0:
            break
        if r.request_id in taken or (not r.running and not admit_open):
            continue
        pending = r.num_pending_tokens
        n = min(pending, budget)
        if n == 0:
            continue
        if not r.running and n < pending and not state.chunked_prefill:
            admit_open = False
            continue
        need_quota = max(0, blocks_for(r.start_tokens + n, bs) - r.num_blocks)
        need = max(0, need_quota - r.num_shared_hit_blocks)
        need_seat = 0 if r.running else 1
        t = r.tenant_id
        victims = [
            v for v in reversed(ranked[pos + 1 :]) if v.running and v.request_id not in taken
        ]
        while True:
            quota_short = need_quota > room.get(t, math.inf)
            if not quota_short and need <= free and need_seat <= seats:
                break
            cands = [v for v in victims if v.tenant_id == t] if quota_short else victims
            if not cands or not can_preempt(cands[0], r):
                break
            victim = cands[0]
            victims.remove(victim)
            evict(victim)
            if r.running:
                admit_open = False
        quota_short = need_quota > room.get(t, math.inf)
        if quota_short or need > free or need_seat > seats:
            if r.running:
                evict(r)
                admit_open = False
            elif not quota_short:
                admit_open = False  # back-pressure; a quota shortfall holds only this tenant
            continue
        items.append((r.request_id, n))
        taken.add(r.request_id)
        budget -= n
        free -= need
        seats -= need_seat
        if t in room:
            room[t] -= need_quota
    return StepDecision(tuple(items), tuple(preempted), note)


class RankingStrategy(abc.ABC):
    """Base of the strategies that are one ranking: subclasses implement ``rank``.

    ``can_preempt`` defaults to vLLM's rule: only a running request that must grow may evict
    (the lowest-ranked running one); waiting requests wait.
    """

    name = "ranking"

    @abc.abstractmethod
    def rank(self, state: SchedulerState) -> list[RequestView]:
        """Waiting and running requests, most important first."""

    def can_preempt(self, victim: RequestView, requester: RequestView) -> bool:
        return requester.running

    def decide(self, state: SchedulerState) -> StepDecision:
        return fill_budget(state, self.rank(state), self.can_preempt, self.name)

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:  # noqa: B027
        """Ranking by static keys learns nothing from step times."""
