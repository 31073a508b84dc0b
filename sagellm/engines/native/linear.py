"""Which kernel a linear layer ``x @ w.T + b`` runs on, by row count, dtype and CPU.

One rule for the Python forward (:func:`linear`) and the C++ layers (``csrc/decoder_layers.cpp``
gets the thresholds from :func:`linear_rows`): the C++ GEMV for a few rows (decode steps,
where the weights' bytes set the time), a GEMM on a prepacked weight from
``packed_min_rows`` rows (ours, csrc/gemm_packed.cpp, on AVX-512 and AVX2 CPUs: from 1 row on
AVX2; else oneDNN's), the transposed product where MKL/oneDNN pick better kernels for a
tall-skinny product, bf16 widened to fp32 on a CPU without a bf16 GEMM, and ``F.linear``
otherwise. Every choice computes ``x @ w.T`` in the weight's dtype with fp32 accumulation;
the measurements behind each threshold are beside it (2 Zen 4 or Zen 3 cores).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from sagellm.accel.quantization import Int8Linear, QuantLinear
from sagellm.engines.native.kernels import (
    gemm_packed_dtypes,
    gemm_packed_min_rows,
    gemm_packed_ops,
    gemv_int8_op,
    gemv_op,
)

# A linear weight: a dense [out, in] tensor or a quantized one (sagellm.accel.quantization)
Weight = torch.Tensor | QuantLinear

# Row counts for which ``(W @ x.T).T`` beats ``F.linear(x, W)`` on CPU: MKL/oneDNN pick better
# kernels for that tall-skinny product (measured fp32 1.3-1.7x at 4-64 rows, bf16 1.1-1.4x at
# 16-64). From 256 rows both reach the GEMM peak and the transposed output only slows the
# elementwise ops after it, so plain F.linear is used there.
_TRANSPOSED_ROWS = {torch.float32: range(4, 256), torch.bfloat16: range(16, 256)}
# Rows for which the C++ GEMV (csrc/gemv.cpp: each weight row read once for all rows of x)
# beats both: decode steps of a few sequences, where the weights' bytes set the time.
GEMV_MAX_ROWS = 4
# With a prepacked weight (``pack_weight``) its GEMM (csrc/gemm_packed.cpp's on AVX-512 and
# AVX2 CPUs, else oneDNN's) takes every step of 2 or more rows; oneDNN's against the GEMV:
# [3072, 576] on 2 Zen 4 cores, ours vs packed, us: fp32 1 row 86 / 153, 2 rows 151 / 129,
# 4 rows 279 / 134; bf16 1 row 59 / 63, 4 rows 191 / 79. The pack's layout is tuned for a
# typical decode batch (the hint); it serves any row count. csrc/gemm_packed.cpp's against
# the GEMV on 2 Zen 3 cores (AVX2), SmolLM2's four layer shapes x 30 layers, ms, GEMV /
# packed: fp32 2 rows 14.0 / 6.3, 4 rows 25.0 / 8.5; bf16 2 rows 9.7 / 6.0, 4 rows 13.0 / 9.7.
# On AVX2 it takes single rows too (``packed_min_rows``: its one-row tile, gemm_tile_avx2.h).
PACKED_MIN_ROWS = 2
PACK_HINT_ROWS = 64
# Rows for which our int8 GEMV beats torch's int8 kernel, per activation dtype (accel_quant's
# kernel sweep, [3072, 576], alone on 2 Zen 4 cores): fp32 0.05 ms vs 0.93 at 1 row, 0.33 vs
# 9.7 at 8 (torch's kernel with fp32 activations runs ~20x below bandwidth, see Int8Linear);
# bf16 0.043 vs 0.064 at 1 row, but torch's is faster from 2 rows (0.076 vs 0.089).
INT8_GEMV_ROWS = {torch.float32: range(1, 17), torch.bfloat16: range(1, 2)}


# On a CPU without a bf16 GEMM (AVX2 only) torch's bf16 matmul runs 3-6x below its fp32 one
# (2 Zen 3 cores, [1536, 576]: 64 rows 7.5 ms vs 1.4 ms widened, 2048 rows 237 vs 39 ms), so
# bf16 linears of more than gemv_max_rows() rows without our GEMM's pack
# (SAGELLM_PACK_WEIGHTS=0, a width the pack cannot hold, no AVX2) widen x and the weight to
# fp32 (the weight in chunks of WIDEN_CHUNK_ROWS output rows, so the lm_head's fp32 copy never
# exists whole) and round the product once, as torch's bf16 GEMM accumulates in fp32 and
# rounds once.
WIDEN_CHUNK_ROWS = 1024


def bf16_gemm_native() -> bool:
    """Whether oneDNN runs bf16 GEMMs natively on this CPU (AVX-512 BW/VL/DQ or
    AVX-NE-CONVERT); else ``linear`` widens bf16 to fp32."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


_BF16_GEMM_NATIVE = bf16_gemm_native()  # asked once: the CPU does not change

# Where bf16 linears widen (no bf16 GEMM), the bf16 GEMV (csrc/gemv.cpp: each weight row
# widened once per 4 rows of x) beats the widened product at every row count it serves
# (2 Zen 3 cores, [3072, 576], us, GEMV / widened: 2 rows 242 / 896, 8 rows 392 / 1209,
# 16 rows 957 / 1112; [576, 1536] alike).
GEMV_MAX_ROWS_WIDENED = 16


def gemv_max_rows(dtype: torch.dtype) -> int:
    """Most rows a ``dtype`` linear gives to the C++ GEMV on this CPU."""
    widened = dtype == torch.bfloat16 and not _BF16_GEMM_NATIVE
    return GEMV_MAX_ROWS_WIDENED if widened else GEMV_MAX_ROWS


def linear_rows(dtype: torch.dtype) -> tuple[int, ...]:
    """The C++ layers' row thresholds (``LinearRows``: GEMV up to, transposed from, to, packed
    from), as ``linear`` picks; () where the C++ layers do not serve ``dtype``. A dtype's
    packs are all ours or all oneDNN's (``pack_weight``)."""
    r = _TRANSPOSED_ROWS.get(dtype)
    if r is None:
        return ()
    ours = dtype in gemm_packed_dtypes() and gemm_packed_min_rows()
    return (gemv_max_rows(dtype), r.start, r.stop, ours or PACKED_MIN_ROWS)


def widened_linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w.T`` of bf16 ``x`` [M, I] and ``w`` [O, I] in fp32, rounded once to bf16."""
    xt = x.float().t()
    out_t = torch.empty((w.shape[0], x.shape[0]), dtype=torch.float32)
    for o in range(0, w.shape[0], WIDEN_CHUNK_ROWS):
        torch.mm(w[o : o + WIDEN_CHUNK_ROWS].float(), xt, out=out_t[o : o + WIDEN_CHUNK_ROWS])
    return out_t.t().to(x.dtype)


def packs_weights(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` weights are prepacked on this CPU: for our GEMM where it serves the
    dtype (csrc/gemm_packed.cpp: fp32 with AVX-512F or AVX2, bf16 with AVX512-BF16 or AVX2),
    else for oneDNN's (bf16 needs AVX-512 BW/VL/DQ or AVX-NE-CONVERT)."""
    return dtype in gemm_packed_dtypes() or _onednn_packs(dtype)


def _onednn_packs(dtype: torch.dtype) -> bool:
    if not torch.backends.mkldnn.is_available() or dtype not in _TRANSPOSED_ROWS:
        return False
    return dtype != torch.bfloat16 or _BF16_GEMM_NATIVE


def _our_gemm_packs(w: torch.Tensor) -> bool:
    """``w`` [N, K] fits csrc/gemm_packed.cpp's layout: a served dtype, N a multiple of 16 and
    K of the inputs one 32-bit lane holds (1 fp32, 2 bf16)."""
    per_lane = 4 // w.element_size()
    return w.dtype in gemm_packed_dtypes() and w.shape[0] % 16 == 0 and w.shape[1] % per_lane == 0


def pack_weight(w: Weight, dtype: torch.dtype) -> torch.Tensor | None:
    """A prepacked copy of a dense CPU weight [out, in], so a GEMM call never repacks it, or None
    where packing does not apply (quantized, other dtype or device, neither our GEMM nor
    oneDNN serving the dtype or shape, or ``SAGELLM_PACK_WEIGHTS=0`` for A/B runs). Where our
    GEMM serves the weight it gets that layout (csrc/gemm_packed.cpp; 2 Zen 4 cores: bf16
    1.1-1.9x oneDNN's at 2-2,048 rows, fp32 1.1-1.7x at 8-64 rows, level at 128-512, 3-5% slower
    at 1,024-2,048; 2 Zen 3 cores (AVX2): fp32 1.06-1.6x oneDNN's at 2-2,048 rows, bf16
    1.2-11x the widened product at 2-2,048 rows); else oneDNN's (blocked for its GEMM: 1.2-2x
    torch's linear at 2-512 rows)."""
    if not isinstance(w, torch.Tensor) or w.device.type != "cpu" or w.dtype != dtype:
        return None  # checked first: a CUDA model never builds the CPU kernels
    if not packs_weights(dtype) or os.environ.get("SAGELLM_PACK_WEIGHTS", "1") == "0":
        return None
    if _our_gemm_packs(w):
        return gemm_packed_ops()[0](w.contiguous())
    if not _onednn_packs(dtype):
        return None
    return torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), PACK_HINT_ROWS)


def _dense(x: torch.Tensor, w: Weight) -> bool:
    """``w`` a contiguous tensor of ``x``'s dtype, one the C++ kernels serve."""
    return (
        isinstance(w, torch.Tensor)
        and x.dtype in _TRANSPOSED_ROWS
        and x.dtype == w.dtype
        and w.is_contiguous()
    )


def packed_min_rows(packed: torch.Tensor | None) -> int:
    """The fewest rows ``linear`` gives to ``packed``'s GEMM (``pack_weight``'s copy): oneDNN's
    from ``PACKED_MIN_ROWS``, csrc/gemm_packed.cpp's from ``gemm_packed_min_rows()``."""
    if packed is None or packed.is_mkldnn:
        return PACKED_MIN_ROWS
    return gemm_packed_min_rows() or PACKED_MIN_ROWS


def takes_gemv(x: torch.Tensor, w: Weight, rows: int, packed: torch.Tensor | None) -> bool:
    """Whether ``linear`` gives ``rows`` rows of ``x`` times ``w`` to the C++ GEMV."""
    if x.device.type != "cpu" or (packed is not None and rows >= packed_min_rows(packed)):
        return False
    return _dense(x, w) and 0 < rows <= gemv_max_rows(x.dtype) and gemv_op() is not None


def _gemm_packed(x: torch.Tensor, packed: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """``x @ w.T + b`` over ``pack_weight``'s csrc/gemm_packed.cpp layout ``packed``
    [N / 16, K / P, 16 P]."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    y = torch.empty((x2.shape[0], packed.shape[0] * 16), dtype=x.dtype)
    bias = b if b is not None else torch.empty(0, dtype=x.dtype)
    gemm_packed_ops()[1](x2, packed, bias, y)
    return y.view(*x.shape[:-1], y.shape[-1])


def linear(
    x: torch.Tensor, w: Weight, b: torch.Tensor | None = None, packed: torch.Tensor | None = None
) -> torch.Tensor:
    """``x @ w.T + b`` with the fastest kernel for the row count (``packed``: ``w``'s
    ``pack_weight`` copy, used from ``packed_min_rows(packed)`` rows)."""
    if packed is not None and x.shape[0] >= packed_min_rows(packed):
        if packed.is_mkldnn:
            return torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        return _gemm_packed(x, packed, b)
    if not isinstance(w, torch.Tensor):  # quantized: its own kernel, or ours for int8 GEMVs
        rows = x.shape[0]
        op = gemv_int8_op() if isinstance(w, Int8Linear) and x.device.type == "cpu" else None
        if op is not None and rows in INT8_GEMV_ROWS.get(x.dtype, ()) and w.scale.dtype == x.dtype:
            y = torch.empty((rows, w.out_features), dtype=x.dtype)
            op(x.contiguous(), w.q, w.scale, y)
        else:
            y = w.linear(x)
        return y + b if b is not None else y
    if x.device.type == "cpu":
        rows = x.shape[0]
        if takes_gemv(x, w, rows, None):
            y = torch.empty((rows, w.shape[0]), dtype=x.dtype)
            gemv_op()(x.contiguous(), w, y)
            return y + b if b is not None else y
        dense = _dense(x, w)
        if dense and x.dtype == torch.bfloat16 and not _BF16_GEMM_NATIVE:
            y = widened_linear(x, w)
            return y + b if b is not None else y
        if rows in _TRANSPOSED_ROWS.get(x.dtype, ()):
            y = torch.matmul(w, x.t()).t()
            return y + b if b is not None else y
    return F.linear(x, w, b)
