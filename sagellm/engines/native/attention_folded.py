"""Prefill attention through the C++ kernel (``csrc/prefix_attention.cpp``): each KV head's
query heads folded into one run of query rows, each row with its own causal key limit.

The kernel computes in fp32 (fp32 inputs, AVX-512F) or with AVX512-BF16 dot products (bf16
inputs), keys and then head dims in the lanes, an online softmax in fp32, and returns the
log-sum-exp beside the output, so the same call serves a plain prefill group and both halves of
a cascade. Measured alone on this project's 2-core Zen 4 box, one layer, against SDPA: its
flash kernel with a mask or ``is_causal`` and, after a slash, ``F.scaled_dot_product_attention``
with ``enable_gqa`` (the path fp32 prefill took before):

    bf16  6,144 folded queries over 1,024 keys            253 vs 152 GFLOP/s
    fp32  5,952 folded queries over 1,024 keys            160 vs 155 GFLOP/s (both near peak)
    fp32  8 prompts x 256 tokens, causal (W1's prefill)   6.1-6.4 vs 14.3 / 12.4 ms
    fp32  31 x 64 queries over their own 64 keys, causal  2.3 vs 4.8 ms (a cascade's suffix)
    fp32  one 1,088-token prompt, causal                  10.6-13.8 vs 15.2 / 18.3 ms

Where the CPU lacks AVX-512 (bf16: AVX512-BF16), or for other dtypes and head sizes,
``available`` is False and callers use SDPA.
"""

from __future__ import annotations

import torch

from sagellm.engines.native.kernels import prefix_attention_dtypes, prefix_attention_op


def available(q: torch.Tensor) -> bool:
    """Whether the kernel serves queries like ``q`` (a dtype in ``prefix_attention_dtypes``,
    on CPU, head size 32k <= 128)."""
    d = q.shape[-1]
    return (
        q.device.type == "cpu"  # first: CUDA queries never build the CPU kernels
        and q.dtype in prefix_attention_dtypes()
        and d % 32 == 0
        and d <= 128
        and prefix_attention_op() is not None
    )


def attend(
    qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, limits: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries ``qg`` [B, H, Q, D] over keys ``k``/``v`` [B, kvH, L, D]; query i of sequence
    b sees keys ``0 .. limits[b, i] - 1`` (``limits`` [B, Q] int64, at least 1).

    Returns (out [B, H, Q, D], lse [B, H, Q] fp32)."""
    b, h, nq, d = qg.shape
    kvh, length = k.shape[1], k.shape[2]
    g = h // kvh
    qf = qg.reshape(b * kvh, g * nq, d)  # [B, kvH, G, Q, D]: head h = kv head h // G
    lim = limits[:, None, None, :].expand(b, kvh, g, nq).reshape(b * kvh, g * nq)
    out, lse = prefix_attention_op()(
        qf.contiguous(),
        k.reshape(b * kvh, length, d).contiguous(),
        v.reshape(b * kvh, length, d).contiguous(),
        scale,
        lim.contiguous(),
    )
    return out.view(b, h, nq, d), lse.view(b, h, nq)
