"""The data speculative decoding passes around: what a drafter is asked for, what it proposes,
and what verification decided.

Invariants: ``len(Draft.token_ids) <= DraftRequest.num_tokens``; ``Draft.probs`` is None
(a deterministic proposal: the drafter's distribution is a point mass on each token) or an
fp32 tensor ``[len(token_ids), vocab]`` whose row ``i`` is the distribution token ``i`` was
drawn from (after the request's temperature / top-k / top-p); ``VerifyResult.token_ids`` is
the ``num_accepted`` accepted drafts followed by exactly one token of the target's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from sagellm.core.types import SamplingParams


@dataclass(frozen=True)
class DraftRequest:
    """One request to draft for: its whole context (prompt + outputs; the last token is the
    one the target computes next) and how many tokens to propose at most."""

    request_id: str
    token_ids: list[int]
    num_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    generator: torch.Generator | None = None  # the request's own RNG (temperature > 0)


@dataclass(frozen=True)
class Draft:
    """Proposed continuation of one request (possibly empty: nothing worth verifying)."""

    token_ids: list[int]
    probs: torch.Tensor | None = None  # [len(token_ids), vocab] fp32, or None = point mass

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class VerifyResult:
    """Tokens to append (accepted drafts, then the target's own token) and how many drafts
    were accepted (0 <= num_accepted <= drafts)."""

    token_ids: list[int]
    num_accepted: int
