"""N-gram prompt lookup (Saxena 2023, vLLM's ``ngram``): no model, no state.

For each request, take the longest suffix of its context of ``max_ngram_tokens`` down to
``min_ngram_tokens`` tokens that occurred earlier in the context; propose the tokens that
followed its most recent earlier occurrence (at most ``num_tokens``). No match: an empty
draft (the step is a plain decode). The proposal is deterministic, so its draft distribution
is a point mass (``Draft.probs`` None).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sagellm.accel.speculative.types import Draft, DraftRequest


def ngram_lookup(
    token_ids: Sequence[int], num_tokens: int, min_ngram_tokens: int, max_ngram_tokens: int
) -> list[int]:
    """The continuation of the latest earlier occurrence of the longest matching suffix."""
    L = len(token_ids)
    if num_tokens < 1 or L < 2:
        return []
    t = torch.tensor(token_ids, dtype=torch.int64)
    for n in range(min(max_ngram_tokens, L - 1), min_ngram_tokens - 1, -1):
        suffix = t[L - n :]
        windows = t[: L - 1].unfold(0, n, 1)  # windows starting before the suffix's start
        hits = (windows == suffix).all(dim=1).nonzero()
        if hits.numel():
            start = int(hits[-1]) + n
            return t[start : start + num_tokens].tolist()
    return []


class NgramDrafter:
    """Proposes continuations copied from the request's own context (see module docstring)."""

    name = "ngram"

    def __init__(self, min_ngram_tokens: int = 1, max_ngram_tokens: int = 4) -> None:
        if not 1 <= min_ngram_tokens <= max_ngram_tokens:
            raise ValueError(
                f"need 1 <= min_ngram_tokens ({min_ngram_tokens}) <= "
                f"max_ngram_tokens ({max_ngram_tokens})"
            )
        self.min_ngram_tokens = min_ngram_tokens
        self.max_ngram_tokens = max_ngram_tokens

    def generate_draft(self, requests: Sequence[DraftRequest]) -> list[Draft]:
        return [
            Draft(
                ngram_lookup(
                    r.token_ids, r.num_tokens, self.min_ngram_tokens, self.max_ngram_tokens
                )
            )
            for r in requests
        ]

    def release(self, request_id: str) -> None:
        """Stateless: nothing to free."""
