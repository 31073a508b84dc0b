"""Weight-only FP8 e4m3 (``torch.float8_e4m3fn``) with one fp32 scale per output channel.

``W[n, k] ~= float(q[n, k]) * scale[n]``, ``scale[n] = max_k |W[n, k]| / 448`` (448 is e4m3's
largest finite value). CPU has no weight-only fp8 matmul in torch 2.13 (``torch._scaled_mm``
runs on CPU but needs fp8 activations too, i.e. W8A8, which this weight-only method does not
do), so ``linear`` converts the fp8 values to the activation dtype and multiplies: it streams
1 byte per weight but pays a conversion pass every call. The per-row scale is applied to the
output (``(x @ q.T) * scale``), which is exact algebra and saves a pass over the weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sagellm.accel.quantization.base import BaseQuantizer, CalibrationStats

E4M3_MAX = 448.0


class FP8Linear:
    def __init__(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        self.q = q.contiguous()  # float8_e4m3fn [out, in]
        self.scale = scale.contiguous()  # [out], activation dtype
        self.out_features, self.in_features = q.shape

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.q.to(x.dtype)) * self.scale

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * self.scale.float()[:, None]

    @property
    def num_bytes(self) -> int:
        return self.q.numel() + self.scale.numel() * self.scale.element_size()


class FP8Quantizer(BaseQuantizer):
    name = "fp8"

    def quantize(self, weight: torch.Tensor, stats: CalibrationStats | None = None) -> FP8Linear:
        wf = weight.float()
        amax = wf.abs().amax(dim=1)
        scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
        q = (wf / scale[:, None]).clamp_(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
        return FP8Linear(q, scale.to(weight.dtype))
