"""Router: pick the engine instance for a new request.

Policies:

- ``round_robin``      instances in turn;
- ``least_loaded``     fewest outstanding tokens (pending prompt/KV tokens plus the output
                       tokens still to generate), then fewest requests, then instance order;
- ``prefix_affinity``  the instance whose cache holds the longest prefix of the prompt, in
                       whole blocks: ``prefix_probe(instance_id, request) -> cached tokens``
                       asks that instance's engine (a read-only lookup in its
                       ``PrefixReuseIndex``, tenant-salted); ties and no match fall back to
                       least loaded. The router keeps no hashes of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from sagellm.core.types import Request
from sagellm.scheduler_ir.types import SchedulerState

RoutingPolicy = Literal["round_robin", "least_loaded", "prefix_affinity"]
ROUTING_POLICIES: tuple[str, ...] = get_args(RoutingPolicy)


def outstanding_tokens(state: SchedulerState) -> int:
    return sum(r.num_pending_tokens + r.max_tokens - r.num_output_tokens for r in state.requests)


class Router:
    """``Router(["a", "b"], "prefix_affinity").route(request, states)`` -> instance id."""

    def __init__(
        self,
        instance_ids: list[str],
        policy: str = "round_robin",
        prefix_probe: Callable[[str, Request], int] | None = None,
    ) -> None:
        if not instance_ids or len(set(instance_ids)) != len(instance_ids):
            raise ValueError("instance_ids must be non-empty and unique")
        if policy not in ROUTING_POLICIES:
            known = ", ".join(ROUTING_POLICIES)
            raise ValueError(f"unknown routing policy {policy!r}; known: {known}")
        self.instance_ids = list(instance_ids)
        self.policy = policy
        self.prefix_probe = prefix_probe
        self._rr = 0

    def route(self, request: Request, states: dict[str, SchedulerState] | None = None) -> str:
        if self.policy == "round_robin":
            choice = self.instance_ids[self._rr % len(self.instance_ids)]
            self._rr += 1
        elif self.policy == "least_loaded":
            choice = self._least_loaded(states or {})
        else:
            choice = self._affinity(request, states or {})
        return choice

    def _least_loaded(
        self, states: dict[str, SchedulerState], candidates: list[str] | None = None
    ) -> str:
        def key(i: str) -> tuple[int, int, int]:
            st = states.get(i)
            load = (outstanding_tokens(st), len(st.requests)) if st else (0, 0)
            return (*load, self.instance_ids.index(i))

        return min(candidates or self.instance_ids, key=key)

    def _affinity(self, request: Request, states: dict[str, SchedulerState]) -> str:
        if self.prefix_probe is None:
            raise ValueError("policy 'prefix_affinity' needs prefix_probe (the engines' caches)")
        matched = {i: self.prefix_probe(i, request) for i in self.instance_ids}
        top = max(matched.values())
        return self._least_loaded(states, [i for i in self.instance_ids if matched[i] == top])
