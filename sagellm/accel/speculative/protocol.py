"""What speculative decoding needs from a drafter and from a model runner.

``DraftModel.generate_draft`` proposes tokens for a batch of requests; ``release`` forgets a
request's state (a drafter that runs a model frees its KV). ``CausalLM`` is a model with its
own per-request KV cache, provided by an engine (``sagellm.engines.native.PagedLM``): the
research module never imports the engine, it drives any runner shaped like this.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from sagellm.accel.speculative.types import Draft, DraftRequest


@runtime_checkable
class DraftModel(Protocol):
    """A drafter: n-gram lookup, a layer-skipping view of the target, or a draft model."""

    name: str

    def generate_draft(self, requests: Sequence[DraftRequest]) -> list[Draft]:
        """One draft per request, in order (``len(draft) <= request.num_tokens``)."""
        ...

    def release(self, request_id: str) -> None:
        """Forget ``request_id`` (finished, aborted or failed); unknown ids are ignored."""
        ...


@runtime_checkable
class CausalLM(Protocol):
    """A decoder with a KV cache per key; the cached tokens of a key are a prefix of what it
    was fed (``truncate`` rolls back rejected tokens)."""

    @property
    def vocab_size(self) -> int: ...

    def num_cached_tokens(self, key: str) -> int:
        """Tokens of ``key`` whose KV is held (0 for an unknown key)."""
        ...

    def extend(
        self, batch: Sequence[tuple[str, Sequence[int]]], all_positions: bool = False
    ) -> list[torch.Tensor | None]:
        """Append each key's tokens (one batched forward) and return fp32 logits per key:
        ``[1, V]`` for its last new token, or ``[n, V]`` for all of them with
        ``all_positions``; None for a key whose KV could not be allocated (it is unchanged)."""
        ...

    def truncate(self, key: str, num_tokens: int) -> None:
        """Keep only the first ``num_tokens`` cached tokens of ``key`` (frees what is past)."""
        ...

    def release(self, key: str) -> None:
        """Free everything ``key`` holds; unknown keys are ignored."""
        ...
