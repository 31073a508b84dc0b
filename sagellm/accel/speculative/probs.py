"""The distribution a request samples from: logits / temperature, top-k and top-p filtered,
softmax. One definition shared by the engine's sampler, the drafters and the verifier, so a
speculative step targets exactly the distribution plain decoding samples from."""

from __future__ import annotations

import torch

from sagellm.core.types import SamplingParams


def filter_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> torch.Tensor:
    """Mask logits outside each row's top-k and top-p nucleus to -inf. [N, V] -> [N, V]."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    V = logits.shape[-1]
    ranks = torch.arange(V, device=logits.device)[None, :]
    drop = ranks >= top_k[:, None]
    probs = sorted_logits.softmax(dim=-1)
    cum_before = probs.cumsum(dim=-1) - probs  # mass strictly above this token
    drop |= cum_before >= top_p[:, None]
    drop[:, 0] = False  # always keep the most likely token
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def sampling_probs(logits: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """fp32 probabilities [N, V] each row of ``logits`` [N, V] samples from under
    ``sampling`` (temperature > 0; greedy has no distribution to sample)."""
    if sampling.greedy:
        raise ValueError("sampling_probs needs temperature > 0 (greedy takes the argmax)")
    n, V = logits.shape
    dev = logits.device
    top_k = torch.full((n,), sampling.top_k or V, device=dev)
    top_p = torch.full((n,), sampling.top_p, device=dev)
    scaled = logits.float() / sampling.temperature
    return filter_top_k_top_p(scaled, top_k, top_p).softmax(dim=-1)
