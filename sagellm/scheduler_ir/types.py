"""Frozen data types of the scheduling IR: nodes, per-request views, decisions, plans.

A scheduling step flows through these types only::

    SchedulerState --strategy--> StepDecision --IRBuilder--> IRGraph --IROptimizer--> IRGraph
        --> ExecutionPlan --ExecutorAPI.submit_plan--> engine instance

Values that flow between nodes are named by strings (``"hidden:r1"``, ``"kv:r1"``); an edge
exists from the node that outputs a value to every node that inputs it. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sagellm.core.types import RequestId

NodeType = Literal[
    "kv_load",  # bring a request's cached KV (earlier tokens) to where the forward reads it
    "prefill",  # forward over a chunk of prompt tokens of one request
    "decode",  # forward over one new token of one request
    "verify",  # forward over draft tokens of one request (speculative decoding)
    "forward",  # fused: one batched forward over the items of many prefill/decode nodes
    "kv_store",  # persist KV written by a forward (one request, or fused for many)
    "kv_transfer",  # move KV blocks of one request between instances (PD separation)
    "all_reduce",  # tensor-parallel reduction of ``bytes`` bytes (bucketed when small)
    "sample",  # pick next tokens from logits (one request, or fused for many)
]
NODE_TYPES: tuple[str, ...] = NodeType.__args__  # type: ignore[attr-defined]
FORWARD_TYPES = frozenset({"prefill", "decode", "verify", "forward"})

ConfigValue = int | float | str | bool | None | tuple


@dataclass(frozen=True)
class IRNode:
    """One operation of a step.

    ``inputs``/``outputs`` are value names; a node may not input a value it outputs.
    ``config`` holds the node's parameters as sorted ``(key, value)`` pairs (hashable,
    JSON-friendly): e.g. a prefill has ``request_id``, ``start_tokens`` (KV tokens already
    computed) and ``num_tokens``; a fused forward has ``items``, a tuple of
    ``(request_id, start_tokens, num_tokens)`` in flat-token order.
    """

    node_id: str
    node_type: NodeType
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    config: tuple[tuple[str, ConfigValue], ...] = ()
    device: str = "cpu"  # where the node runs: "cpu", "cuda:0", or an instance id for PD

    def __post_init__(self) -> None:
        if self.node_type not in NODE_TYPES:
            raise ValueError(f"node_type {self.node_type!r} is not one of {', '.join(NODE_TYPES)}")
        if set(self.inputs) & set(self.outputs):
            raise ValueError(f"node {self.node_id!r} inputs a value it outputs")

    def get(self, key: str, default: ConfigValue = None) -> ConfigValue:
        """The config value under ``key`` (``default`` when absent)."""
        for k, v in self.config:
            if k == key:
                return v
        return default


def node_config(**kwargs: ConfigValue) -> tuple[tuple[str, ConfigValue], ...]:
    """Build an :class:`IRNode` config from keyword arguments (sorted, hashable)."""
    return tuple(sorted(kwargs.items()))


RequestPhase = Literal["waiting", "prefill", "decode"]


@dataclass(frozen=True)
class RequestView:
    """What a strategy may know about one unfinished request (a read-only snapshot).

    Invariants: ``0 <= num_computed_tokens <= num_tokens``; ``running`` requests hold KV
    blocks, waiting ones none. A waiting request starts at ``start_tokens ==
    num_prefix_hit_tokens``: the prompt tokens admission will take from the engine's prefix
    cache (a verified, tenant-salted lookup in its ``PrefixReuseIndex``, whole blocks, at most
    ``num_tokens - 1``; ``num_lower_tier_hit_tokens`` of them are on host/disk and are loaded
    back first). ``num_pending_tokens == num_tokens - start_tokens`` (1 while decoding).
    Times are engine-clock seconds.
    """

    request_id: RequestId
    arrival_s: float
    num_prompt_tokens: int
    num_tokens: int  # prompt + generated so far
    num_computed_tokens: int  # tokens whose KV is in this instance's cache
    num_output_tokens: int
    max_tokens: int
    running: bool
    num_blocks: int  # KV blocks held
    priority: int = 0  # larger is more important
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    tenant_id: str = "default"
    model: str | None = None
    first_token_s: float | None = None
    last_token_s: float | None = None
    num_preemptions: int = 0
    num_prefix_hit_tokens: int = 0  # waiting only: tokens admission reuses from the cache
    num_lower_tier_hit_tokens: int = 0  # of those, tokens on host/disk (loaded back)
    num_shared_hit_blocks: int = 0  # hit blocks running requests hold: sharing takes no free one

    @property
    def start_tokens(self) -> int:
        """Where this step's tokens start: computed KV (running) or the cache hit (waiting)."""
        return self.num_computed_tokens if self.running else self.num_prefix_hit_tokens

    @property
    def num_pending_tokens(self) -> int:
        return self.num_tokens - self.start_tokens

    @property
    def phase(self) -> RequestPhase:
        if not self.running:
            return "waiting"
        return "decode" if self.num_computed_tokens >= self.num_prompt_tokens else "prefill"


@dataclass(frozen=True)
class SchedulerState:
    """A snapshot of one instance: its unfinished requests and its limits.

    ``num_free_blocks`` counts blocks an allocation can get (free plus evictable cached);
    ``tenant_free_blocks`` the blocks each tenant with a hard quota may still take (tenants
    not listed are unlimited); ``chunked_prefill`` False means a prompt is admitted only when
    all its pending tokens fit the step's budget.
    """

    instance_id: str
    now_s: float
    requests: tuple[RequestView, ...]
    block_size_tokens: int
    num_free_blocks: int
    num_total_blocks: int
    max_num_seqs: int
    max_num_batched_tokens: int
    step_index: int = 0
    tp_size: int = 1
    hidden_bytes_per_token: int = 0  # all-reduce payload per token and layer (TP only)
    num_layers: int = 0
    tenant_free_blocks: tuple[tuple[str, int], ...] = ()
    chunked_prefill: bool = True

    def by_id(self) -> dict[RequestId, RequestView]:
        return {r.request_id: r for r in self.requests}


@dataclass(frozen=True)
class StepDecision:
    """A strategy's answer for one step: what to run, in flat-token order, and what to evict.

    ``items`` are ``(request_id, num_new_tokens)``; ``preempt`` lists running requests whose
    KV is dropped (recomputed later) before the items run.
    """

    items: tuple[tuple[RequestId, int], ...] = ()
    preempt: tuple[RequestId, ...] = ()
    note: str = ""  # e.g. the mode an adaptive strategy picked

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.items)


PlanState = Literal["queued", "completed", "rejected", "cancelled", "failed"]


@dataclass(frozen=True)
class PlanStatus:
    """Where a submitted plan stands; ``reason`` says why it was rejected or failed."""

    plan_id: str
    state: PlanState
    reason: str | None = None
    num_outputs: int = 0


@dataclass(frozen=True)
class ForwardItem:
    """One request's share of a lowered forward: tokens ``[start, start + num)``."""

    request_id: RequestId
    start_tokens: int
    num_tokens: int
