"""Weight-only int8, symmetric, one fp scale per output channel (round to nearest).

``W[n, k] ~= q[n, k] * scale[n]`` with ``q`` in [-127, 127]. The matmul is
``torch.ops.aten._weight_int8pack_mm`` (CPU and CUDA): int8 weights are read as such and
converted inside the kernel, so a decode step streams 1 byte per weight plus the scales. Calls
with more than ``KERNEL_MAX_ROWS`` rows (prefill), and every CPU call with fp32 activations
(torch's kernel is slow there), convert the weight once and use the dense GEMM.
On CPU the native engine sends decode-sized calls to its own int8 GEMV instead
(``torch.ops.sagellm.gemv_int8``; torch's kernel runs far below memory bandwidth there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sagellm.accel.quantization.base import BaseQuantizer, CalibrationStats
from sagellm.accel.quantization.protocol import KERNEL_MAX_ROWS


class Int8Linear:
    """int8 values [out, in] and scales [out] in the activation dtype."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        self.q = q.contiguous()
        self.scale = scale.contiguous()
        self.out_features, self.in_features = q.shape

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        # torch's CPU kernel with fp32 activations runs far below bandwidth (SmolLM2's lm_head:
        # 47 ms at 1 row, where converting and the dense GEMM take a few): convert instead
        slow_kernel = x.device.type == "cpu" and x.dtype == torch.float32
        if x.shape[0] > KERNEL_MAX_ROWS or slow_kernel:  # per-row scale commutes with the matmul
            return F.linear(x, self.q.to(x.dtype)) * self.scale
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.q, self.scale)

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]

    @property
    def num_bytes(self) -> int:
        return self.q.numel() + self.scale.numel() * self.scale.element_size()


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int8 [out, in], scale fp32 [out]); an all-zero row gets scale 1."""
    wf = w.float()
    amax = wf.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(wf / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Quantizer(BaseQuantizer):
    name = "int8"

    def quantize(self, weight: torch.Tensor, stats: CalibrationStats | None = None) -> Int8Linear:
        q, scale = quantize_int8_per_channel(weight)
        return Int8Linear(q, scale.to(weight.dtype))
