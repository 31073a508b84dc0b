"""Accuracy of sparse attention against dense attention, decode-style.

The measurement: a fixed token slice is split into a context (prefilled densely by both
engines) and ``num_scored_tokens`` continuation tokens fed one by one as decode steps
(teacher-forced: the true next token, not the sampled one), so every scored token attends to
the whole context through the sparse pattern. From the two engines' logits of the same
positions: perplexity of each (nats, ``exp(mean NLL)``), the largest absolute logit difference,
KL(dense || sparse) per token (nats; mean and max) and how often the top-1 token agrees.

An engine only needs ``decode_logits(prompt_ids, target_ids) -> fp32 [len(target_ids), vocab]``
(the native engine has it); row i predicts ``target_ids[i]`` after the prompt and
``target_ids[:i]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SparseAccuracy:
    """Sparse vs dense logits of the same teacher-forced positions."""

    context_tokens: int
    num_scored_tokens: int
    dense_perplexity: float
    sparse_perplexity: float
    max_abs_logit_error: float
    mean_kl_nats: float  # KL(dense || sparse), mean over scored tokens
    max_kl_nats: float
    top1_agreement: float  # fraction of positions whose argmax agrees

    @property
    def perplexity_ratio(self) -> float:
        return self.sparse_perplexity / self.dense_perplexity


def mean_nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-likelihood (nats) of ``targets`` [N] under ``logits`` [N, V]."""
    return float(F.cross_entropy(logits.float(), targets, reduction="mean"))


def compare_logits(
    dense: torch.Tensor, sparse: torch.Tensor, targets: torch.Tensor, context_tokens: int
) -> SparseAccuracy:
    """Metrics of ``sparse`` against ``dense`` logits [N, V] predicting ``targets`` [N]."""
    if dense.shape != sparse.shape or dense.shape[0] != targets.shape[0]:
        raise ValueError(
            f"shapes differ: dense {tuple(dense.shape)}, sparse {tuple(sparse.shape)}, "
            f"targets {tuple(targets.shape)}"
        )
    lp_d = F.log_softmax(dense.float(), dim=-1)
    lp_s = F.log_softmax(sparse.float(), dim=-1)
    kl = (lp_d.exp() * (lp_d - lp_s)).sum(-1)
    return SparseAccuracy(
        context_tokens=context_tokens,
        num_scored_tokens=int(targets.shape[0]),
        dense_perplexity=math.exp(mean_nll(dense, targets)),
        sparse_perplexity=math.exp(mean_nll(sparse, targets)),
        max_abs_logit_error=float((dense.float() - sparse.float()).abs().max()),
        mean_kl_nats=float(kl.mean()),
        max_kl_nats=float(kl.max()),
        top1_agreement=float((dense.argmax(-1) == sparse.argmax(-1)).float().mean()),
    )


def decode_accuracy(
    dense_engine, sparse_engine, token_ids: list[int], context_tokens: int, num_scored_tokens: int
) -> SparseAccuracy:
    """Teacher-forced decode of ``token_ids[context:context + scored]`` after the context on
    both engines (see the module docstring); ``token_ids`` must hold that many tokens."""
    if context_tokens < 1 or num_scored_tokens < 1:
        raise ValueError(
            f"context_tokens ({context_tokens}) and num_scored_tokens ({num_scored_tokens}) "
            "must be >= 1"
        )
    end = context_tokens + num_scored_tokens
    if len(token_ids) < end:
        raise ValueError(f"need {end} tokens, got {len(token_ids)}")
    prompt, targets = token_ids[:context_tokens], token_ids[context_tokens:end]
    dense = dense_engine.decode_logits(prompt, targets)
    sparse = sparse_engine.decode_logits(prompt, targets)
    t = torch.tensor(targets, dtype=torch.int64, device=dense.device)
    return compare_logits(dense, sparse.to(dense.device), t, context_tokens)
