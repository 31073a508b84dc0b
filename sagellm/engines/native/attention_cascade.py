"""Cascade prefill attention: a group's shared prefix attended once for all of its queries.

When every sequence of a prefill group starts with the same cached blocks (a system prompt, a
few-shot header; W2 of the peer benchmark) attention splits at the end of that prefix:

    prefix:  every query of the group, GQA heads folded into the query length, against the
             prefix keys: one call over one copy of the prefix K/V instead of one per
             sequence, with a query length large enough to run near GEMM speed (fp32 on
             AVX-512 CPUs, bf16 on AVX512-BF16 ones: ``csrc/prefix_attention.cpp``; otherwise
             SDPA's flash kernel)
    suffix:  each sequence's queries against its own remaining keys (causal mask)

and the two partial results merge exactly through their log-sum-exps
(``o = o_p exp(lse_p - lse) + o_s exp(lse_s - lse)``, ``lse = logaddexp(lse_p, lse_s)``).
Every query sees the whole prefix (it ends at or before each sequence's first query), so the
prefix part needs no mask. The result is one softmax over all keys up to rounding order.

Measured alone on this project's 2-core box (32 sequences x 64 queries over 1,024 shared +
64 own keys, SmolLM2's 9/3 heads, one layer): 55 ms as one masked SDPA call per group vs
36 ms prefix + 6 ms suffix, fp32; bf16 51 vs 32 + 4 ms with SDPA for the prefix, whose
bf16 part the C++ kernel then cut from 32 to 19 ms (253 vs 152 GFLOP/s, 6,144 folded queries
over 1,024 keys).
"""

from __future__ import annotations

import torch

from sagellm.engines.native import attention_folded as folded
from sagellm.engines.native.kernels import prefix_attention_op

#: A shared prefix shorter than this is attended with the rest (the second SDPA call and the
#: merge cost more than one pass over the prefix saves).
MIN_SHARED_TOKENS = 256

_flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def shared_prefix_blocks(
    block_tables: list[list[int]], num_computed: list[int], block_size: int
) -> int:
    """Leading block-table entries every sequence holds in common that end at or before
    every sequence's first query (0 unless they hold ``MIN_SHARED_TOKENS`` or more)."""
    n = min(num_computed) // block_size
    if len(block_tables) < 2 or n * block_size < MIN_SHARED_TOKENS:
        return 0
    first = block_tables[0]
    n = min(n, min(len(t) for t in block_tables))
    for t in block_tables[1:]:
        if t[:n] != first[:n]:
            n = next(i for i in range(n) if t[i] != first[i])
    return n if n * block_size >= MIN_SHARED_TOKENS else 0


def prefix_part(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``q`` [N, H, D] over the prefix ``k``/``v`` [kvH, L, D], no mask.

    Returns (out [N, H, D], lse [N, H] fp32)."""
    n, h, d = q.shape
    kvh = k.shape[0]
    g = h // kvh
    qf = q.view(n, kvh, g, d).permute(1, 2, 0, 3).reshape(kvh, g * n, d)
    if folded.available(q):
        o, lse = prefix_attention_op()(qf, k.contiguous(), v.contiguous(), scale)
    else:
        o, lse = _flash(qf[None], k[None], v[None], 0.0, False, scale=scale)
    o = o.view(kvh, g, n, d).permute(2, 0, 1, 3).reshape(n, h, d)
    return o, lse.view(kvh, g, n).permute(2, 0, 1).reshape(n, h)


def suffix_part(
    qg: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    limits: torch.Tensor,
    valid: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded queries ``qg`` [B, H, max_q, D] over each sequence's own keys ``k``/``v``
    [B, kvH, L, D] under the causal ``mask`` [B, 1, max_q, L] (True = attend), which is
    ``limits`` [B, max_q] (keys each query sees) as a mask.

    Returns (out [N, H, D], lse [N, H] fp32) for the ``valid`` [B, max_q] queries."""
    if folded.available(qg):
        o, lse = folded.attend(qg, k, v, limits, scale)
    else:
        keep = mask | ~valid[:, None, :, None]  # padded rows see every key: no all -inf row
        bias = torch.zeros(keep.shape, dtype=qg.dtype).masked_fill_(~keep, float("-inf"))
        o, lse = _flash(qg, k, v, 0.0, False, attn_mask=bias, scale=scale)
    return o.transpose(1, 2)[valid], lse.transpose(1, 2)[valid]


def merge(
    o_p: torch.Tensor, lse_p: torch.Tensor, o_s: torch.Tensor, lse_s: torch.Tensor
) -> torch.Tensor:
    """Softmax over the union of two disjoint key sets from each set's normalised output and
    log-sum-exp ([N, H, D] and [N, H]); computed in fp32, returned in ``o_p``'s dtype."""
    lse = torch.logaddexp(lse_p, lse_s)
    w_p = torch.exp(lse_p - lse).unsqueeze(-1)
    w_s = torch.exp(lse_s - lse).unsqueeze(-1)
    return (o_p.float() * w_p + o_s.float() * w_s).to(o_p.dtype)
