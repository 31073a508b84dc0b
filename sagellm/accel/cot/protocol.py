"""What CoT acceleration needs from engines (a :class:`~sagellm.core.protocol.BaseEngine`
plus a little): the native engine satisfies both protocols."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from sagellm.core.types import SamplingParams


@runtime_checkable
class DraftEngine(Protocol):
    """Proposes steps: greedy ``generate`` over token-id prompts, and its vocabulary size
    (it must equal the target's: draft token ids are verified as target token ids)."""

    @property
    def vocab_size(self) -> int: ...

    def generate(
        self,
        prompts: Sequence[list[int]],
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[list[int]]: ...


@runtime_checkable
class TargetEngine(DraftEngine, Protocol):
    """Verifies steps: additionally teacher-forced logits of given positions (one batched
    forward, the cached prefix reused) and the tokens that end a greedy run."""

    eos_token_ids: frozenset[int]

    def prompt_logits(self, token_ids: list[int], from_tokens: int) -> torch.Tensor: ...
