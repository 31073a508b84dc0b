"""Perplexity of an engine's model on a token sequence, by strided sliding windows.

For ``window_tokens`` W and ``stride_tokens`` S < W, windows start at 0, S, 2S, ...; each
window is one teacher-forced forward over up to W tokens, and only the tokens not scored by an
earlier window count (all of the first window but its first token, then the last S of each).
Every token from index 1 on is scored exactly once, with at least ``W - S`` tokens of context
except in the first window. ``perplexity = exp(mean NLL)`` in nats per token.

The engine only needs ``teacher_forced_logits(token_ids) -> fp32 [T, vocab]`` (the native engine has
it); lossy techniques (quantization, sparse attention) change that forward and so show up here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PerplexityResult:
    perplexity: float
    mean_nll: float  # nats per scored token
    num_scored_tokens: int
    window_tokens: int
    stride_tokens: int


def perplexity(
    engine, token_ids: list[int], window_tokens: int, stride_tokens: int
) -> PerplexityResult:
    """Perplexity of ``token_ids`` under ``engine.teacher_forced_logits`` (windows W, stride S)."""
    if window_tokens < 2:
        raise ValueError(f"window_tokens must be >= 2 (got {window_tokens})")
    if not 1 <= stride_tokens < window_tokens:
        raise ValueError(f"stride_tokens must be in [1, window_tokens) (got {stride_tokens})")
    if len(token_ids) < 2:
        raise ValueError("need at least 2 tokens to score")
    total_nll = 0.0
    scored_until = 1  # tokens [1, scored_until) are scored
    n = len(token_ids)
    begin = 0
    while scored_until < n:
        end = min(begin + window_tokens, n)
        window = token_ids[begin:end]
        logits = engine.teacher_forced_logits(window)  # row i predicts window[i + 1]
        first = scored_until - begin  # first target index inside the window
        targets = torch.tensor(window[first:], dtype=torch.int64, device=logits.device)
        nll = F.cross_entropy(logits[first - 1 : -1].float(), targets, reduction="sum")
        total_nll += float(nll)
        scored_until = end
        begin += stride_tokens
    count = n - 1
    mean = total_nll / count
    return PerplexityResult(math.exp(mean), mean, count, window_tokens, stride_tokens)
