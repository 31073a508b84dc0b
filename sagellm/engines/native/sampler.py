"""Token selection: greedy rows by one batched argmax; sampled rows by temperature, top-k and
top-p filtering done batched, then one draw per row from that request's own generator (so a
seeded request gives the same tokens whatever else is in the batch)."""

from __future__ import annotations

import torch

from sagellm.accel.speculative.probs import filter_top_k_top_p
from sagellm.core.types import SamplingParams
from sagellm.engines.native.kernels import argmax_rows_op


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=-1)`` [N] int64 (the C++ row argmax for CPU fp32 logits)."""
    op = argmax_rows_op() if logits.device.type == "cpu" else None
    if op is not None and logits.dtype == torch.float32 and logits.dim() == 2:
        return op(logits.contiguous())
    return logits.argmax(dim=-1)


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """Pick one token per row of fp32 ``logits`` [N, V]."""
    out = greedy(logits)
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if rows:
        idx = torch.tensor(rows, device=logits.device)
        sub = logits[idx]
        temp = torch.tensor([params[i].temperature for i in rows], device=logits.device)
        top_k = torch.tensor([params[i].top_k or sub.shape[-1] for i in rows], device=logits.device)
        top_p = torch.tensor([params[i].top_p for i in rows], device=logits.device)
        sub = filter_top_k_top_p(sub / temp[:, None], top_k, top_p)
        probs = sub.softmax(dim=-1).cpu()
        for j, i in enumerate(rows):
            out[i] = int(torch.multinomial(probs[j], 1, generator=generators[i]))
    return out.tolist()
