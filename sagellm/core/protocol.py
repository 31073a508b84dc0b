"""The contract every engine honours (native, lmdeploy, vllm)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sagellm.core.types import (
    Request,
    RequestId,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
    StepMetrics,
)


@runtime_checkable
class BaseEngine(Protocol):
    """An engine that admits requests and advances them one step at a time.

    ``add_request`` validates and either queues the request or raises ``InvalidRequestError``
    (the engine keeps serving the others). ``step`` runs one scheduling + forward iteration and
    returns the streaming deltas it produced. Requests waiting for KV memory stay queued
    (back-pressure); they are never dropped.
    """

    capabilities: frozenset[str]  # module hooks honoured, e.g. {"prefix_reuse", "chunked_prefill"}

    def add_request(self, request: Request) -> None: ...

    def step(self) -> list[RequestOutput]: ...

    def abort(self, request_id: RequestId) -> bool: ...

    def has_unfinished(self) -> bool: ...

    def generate(
        self,
        prompts: Sequence[str] | Sequence[list[int]],
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[list[int]]: ...

    def request_metrics(self) -> list[RequestMetrics]: ...

    def step_metrics(self) -> list[StepMetrics]: ...

    def stats(self) -> dict[str, float]: ...
