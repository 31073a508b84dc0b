"""Core request/response types shared by every module and engine.

Times are seconds on the engine clock (``time.perf_counter``) unless a field says otherwise.
Ids are plain strings/ints with aliases so signatures say what they carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RequestId = str
BlockId = int
TenantId = str

#: ``rejected``: refused at ``add_request`` (``InvalidRequestError``); a benchmark records it,
#: an engine's ``step`` never reports it.
FinishReason = Literal["stop", "length", "abort", "error", "rejected"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token.

    ``temperature == 0`` means greedy (argmax); the other knobs are then ignored.
    ``seed`` makes sampling reproducible per request, independent of batch composition.
    """

    max_tokens: int = 16  # output tokens to generate, >= 1
    temperature: float = 0.0  # >= 0; 0 is greedy
    top_p: float = 1.0  # nucleus mass, in (0, 1]
    top_k: int | None = None  # keep the k most likely tokens; None keeps all
    seed: int | None = None  # per-request RNG seed
    stop_token_ids: tuple[int, ...] = ()  # finish (reason "stop") after emitting one of these
    ignore_eos: bool = False  # keep generating past the model's EOS token

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the allowed values."""
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(
                f"sampling.max_tokens must be an integer >= 1, got {self.max_tokens!r}"
            )
        if self.temperature < 0:
            raise ValueError(f"sampling.temperature must be >= 0, got {self.temperature!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"sampling.top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"sampling.top_k must be None or an integer >= 1, got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class SLO:
    """Service-level objectives of one request, in seconds (each ``None`` = no objective)."""

    ttft_s: float | None = None
    tpot_s: float | None = None


@dataclass
class Request:
    """One generation request as the engine receives it."""

    request_id: RequestId
    prompt_token_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tenant_id: TenantId = "default"
    priority: int = 0  # larger is more important
    slo: SLO = field(default_factory=SLO)
    arrival_s: float | None = None  # engine clock; None = when add_request is called
    model: str | None = None


@dataclass(frozen=True)
class RequestOutput:
    """What one engine step produced for one request (a streaming delta)."""

    request_id: RequestId
    new_token_ids: list[int]  # tokens produced by this step (empty on abort/error)
    finished: bool
    finish_reason: FinishReason | None = None
    num_cached_tokens: int = 0  # prompt tokens whose KV was reused rather than computed
    error: str | None = None  # set when finish_reason == "error"


@dataclass
class RequestMetrics:
    """Per-request timestamps (engine clock, seconds) and counts.

    Invariant: arrival_s <= scheduled_s <= first_token_s <= token_times_s[i] <= finished_s,
    and ``len(token_times_s) == num_output_tokens``.
    """

    request_id: RequestId
    arrival_s: float
    num_prompt_tokens: int
    scheduled_s: float | None = None
    first_token_s: float | None = None
    token_times_s: list[float] = field(default_factory=list)
    finished_s: float | None = None
    num_cached_tokens: int = 0
    num_output_tokens: int = 0
    preemptions: int = 0
    finish_reason: FinishReason | None = None
    # why it failed (finish_reason "error"), e.g. a client-side timeout or an HTTP error
    error: str | None = None


@dataclass(frozen=True)
class StepMetrics:
    """What one engine step did. ``flops`` is analytic (2 per MAC), ``bytes_moved`` an estimate
    of weight + KV bytes read by the forward."""

    step: int
    start_s: float
    num_seqs: int
    num_batched_tokens: int
    num_prefill_tokens: int
    num_decode_tokens: int
    schedule_s: float
    compute_s: float
    sample_s: float
    comm_s: float = 0.0
    kv_load_s: float = 0.0  # tier loads the step waited for (exposed)
    kv_load_hidden_s: float = 0.0  # tier loads that ran while the step's forward ran
    flops: float = 0.0
    bytes_moved: float = 0.0
    num_preempted: int = 0
    num_waiting: int = 0
    kv_blocks_used: int = 0
    num_draft_tokens: int = 0  # speculative drafts verified by this step's forward
    num_accepted_tokens: int = 0  # of those, accepted
