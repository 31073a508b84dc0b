"""Router: pick the engine instance for a new request.

Policies:

- ``round_robin``      instances in turn;
- ``least_loaded``     fewest outstanding tokens (pending prompt/KV tokens plus the output
                       tokens still to generate), then fewest requests, then instance order;
- ``prefix_affinity``  the instance whose cache holds the longest prefix of the prompt, in
                       whole blocks; ``prefix_probe(instance_id, tokens) -> cached tokens``
                       asks an engine's prefix cache when there is one, otherwise the router
                       remembers the block-hash chains of the prompts it sent to each instance
                       (LRU-bounded). No match falls back to least loaded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, get_args

from sagellm.core.types import Request
from sagellm.scheduler_ir.types import SchedulerState

RoutingPolicy = Literal["round_robin", "least_loaded", "prefix_affinity"]
ROUTING_POLICIES: tuple[str, ...] = get_args(RoutingPolicy)


def prefix_block_hashes(tokens: list[int], block_size: int) -> list[int]:
    """Chained hashes of the full blocks of ``tokens`` (hash k covers tokens[: (k+1) * B])."""
    out, h = [], 0
    for b in range(len(tokens) // block_size):
        h = hash((h, tuple(tokens[b * block_size : (b + 1) * block_size])))
        out.append(h)
    return out


def outstanding_tokens(state: SchedulerState) -> int:
    return sum(r.num_pending_tokens + r.max_tokens - r.num_output_tokens for r in state.requests)


class Router:
    """``Router(["a", "b"], "prefix_affinity").route(request, states)`` -> instance id."""

    def __init__(
        self,
        instance_ids: list[str],
        policy: str = "round_robin",
        block_size_tokens: int = 16,
        prefix_probe: Callable[[str, list[int]], int] | None = None,
        max_tracked_blocks: int = 65_536,
    ) -> None:
        if not instance_ids or len(set(instance_ids)) != len(instance_ids):
            raise ValueError("instance_ids must be non-empty and unique")
        if policy not in ROUTING_POLICIES:
            known = ", ".join(ROUTING_POLICIES)
            raise ValueError(f"unknown routing policy {policy!r}; known: {known}")
        if block_size_tokens < 1:
            raise ValueError(f"block_size_tokens must be >= 1, got {block_size_tokens!r}")
        self.instance_ids = list(instance_ids)
        self.policy = policy
        self.block_size = block_size_tokens
        self.prefix_probe = prefix_probe
        self.max_tracked_blocks = max_tracked_blocks
        self._rr = 0
        self._seen: dict[str, OrderedDict[int, None]] = {i: OrderedDict() for i in instance_ids}

    def route(self, request: Request, states: dict[str, SchedulerState] | None = None) -> str:
        if self.policy == "round_robin":
            choice = self.instance_ids[self._rr % len(self.instance_ids)]
            self._rr += 1
        elif self.policy == "least_loaded":
            choice = self._least_loaded(states or {})
        else:
            choice = self._affinity(request.prompt_token_ids, states or {})
        self._remember(choice, request.prompt_token_ids)
        return choice

    def _least_loaded(
        self, states: dict[str, SchedulerState], candidates: list[str] | None = None
    ) -> str:
        def key(i: str) -> tuple[int, int, int]:
            st = states.get(i)
            load = (outstanding_tokens(st), len(st.requests)) if st else (0, 0)
            return (*load, self.instance_ids.index(i))

        return min(candidates or self.instance_ids, key=key)

    def matched_tokens(self, instance_id: str, tokens: list[int]) -> int:
        """Tokens of ``tokens``' longest cached prefix on ``instance_id`` (whole blocks)."""
        if self.prefix_probe is not None:
            return self.prefix_probe(instance_id, tokens)
        seen = self._seen[instance_id]
        n = 0
        for h in prefix_block_hashes(tokens, self.block_size):
            if h not in seen:
                break
            n += self.block_size
        return n

    def _affinity(self, tokens: list[int], states: dict[str, SchedulerState]) -> str:
        matched = {i: self.matched_tokens(i, tokens) for i in self.instance_ids}
        top = max(matched.values())
        return self._least_loaded(states, [i for i in self.instance_ids if matched[i] == top])

    def _remember(self, instance_id: str, tokens: list[int]) -> None:
        seen = self._seen[instance_id]
        for h in prefix_block_hashes(tokens, self.block_size):
            seen[h] = None
            seen.move_to_end(h)
        while len(seen) > self.max_tracked_blocks:
            seen.popitem(last=False)
