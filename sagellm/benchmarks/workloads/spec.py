"""Workload configuration: what requests arrive, when, and with which lengths.

A workload is reproducible from its config and seed: :func:`build_workload` is a pure
function of (config, vocab_size).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LengthDist(_Frozen):
    """Token lengths: ``fixed`` (= mean), ``uniform`` in [min, max], or ``normal`` / ``lognormal``
    around ``mean`` with ``std``, clipped to [min, max]."""

    dist: Literal["fixed", "uniform", "normal", "lognormal"] = "fixed"
    mean: int = Field(default=128, ge=1)
    std: float = Field(default=0.0, ge=0)
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1)


class ArrivalConfig(_Frozen):
    """Inter-arrival times. ``poisson`` at ``rate_per_s``; ``gamma`` with the same mean rate and
    shape ``burstiness`` (< 1 burstier than Poisson, 1 = Poisson); ``burst`` = all at t=0."""

    process: Literal["poisson", "gamma", "burst"] = "burst"
    rate_per_s: float = Field(default=1.0, gt=0)
    burstiness: float = Field(default=1.0, gt=0)


class TraceConfig(_Frozen):
    """Replay of a Mooncake-format JSONL trace, scaled to fit a CPU."""

    path: str
    max_records: int | None = Field(default=None, ge=1)
    length_scale: float = Field(default=1.0, gt=0)  # multiplies input/output lengths
    time_scale: float = Field(default=1.0, gt=0)  # multiplies inter-arrival gaps
    block_tokens: int = Field(default=512, ge=1)  # tokens per hash id in the trace
    skip_bad_lines: bool = False


class WorkloadConfig(_Frozen):
    """One workload. ``kind`` picks the generator; the other sections parameterize it."""

    kind: Literal[
        "synthetic",
        "shared_prefix",
        "multi_turn",
        "long_context",
        "high_concurrency",
        "tenant_mix",
        "trace",
    ] = "synthetic"
    seed: int = 0
    num_requests: int = Field(default=16, ge=1)
    arrival: ArrivalConfig = Field(default_factory=ArrivalConfig)
    prompt_tokens: LengthDist = Field(default_factory=LengthDist)
    output_tokens: LengthDist = Field(default_factory=lambda: LengthDist(mean=32))
    # shared_prefix: num_groups groups; each request = its group's prefix + unique suffix
    num_groups: int = Field(default=1, ge=1)
    shared_prefix_tokens: int = Field(default=256, ge=0)
    # multi_turn: sessions of turns; turn k's prompt = all earlier turns + answers + new message
    num_sessions: int = Field(default=4, ge=1)
    turns_per_session: int = Field(default=3, ge=1)
    think_time_s: float = Field(default=1.0, ge=0)
    # tenant_mix: tenant name -> weight (requests drawn in proportion)
    tenants: dict[str, float] = Field(default_factory=lambda: {"default": 1.0})
    trace: TraceConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> WorkloadConfig:
        if self.kind == "trace" and self.trace is None:
            raise ValueError("kind 'trace' needs a trace section (trace.path)")
        if any(w <= 0 for w in self.tenants.values()):
            raise ValueError("tenants weights must be > 0")
        return self
