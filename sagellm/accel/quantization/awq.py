"""AWQ: activation-aware weight quantization (Lin et al., MLSys 2024), int4 groups underneath.

Weights that meet large activations matter most. For a linear with calibration inputs ``X``
([T, in]) AWQ searches one exponent ``alpha`` on a grid in [0, 1) and sets the per-input-channel
scale ``s = mean_t |X[t]| ** alpha`` (normalised by ``sqrt(max s * min s)``), quantizes
``W * s`` (columns scaled up) with group-wise round-to-nearest int4, and computes
``Q(W * s) @ (x / s)``; the chosen alpha minimises ``||X W^T - (X / s) Q(W * s)^T||^2`` on a
sample of the calibration rows. ``alpha = 0`` is plain RTN, so AWQ never does worse than RTN on
its own calibration sample.

Differences from the reference implementation, on purpose: ``1 / s`` is applied to ``x`` inside
``Int4Linear.linear`` (one elementwise pass over [T, in]) instead of being folded into the
preceding RMSNorm / projection, so no other weight changes; the weight-clipping search of AWQ is
not done; every layer's inputs come from one pass of the unquantized model.
"""

from __future__ import annotations

import torch

from sagellm.accel.quantization.base import CalibrationStats
from sagellm.accel.quantization.int4 import Int4Quantizer, dequantize_int4, quantize_int4_rtn
from sagellm.core.errors import ConfigError

ALPHA_GRID: tuple[float, ...] = tuple(i / 20 for i in range(20))


class AWQQuantizer(Int4Quantizer):
    name = "awq"
    needs_calibration = True
    needs_rows = True

    def quantize_groups(
        self, weight: torch.Tensor, stats: CalibrationStats | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if stats is None or stats.rows is None:
            raise ConfigError("accel.method 'awq' needs calibration statistics with input rows")
        w = weight.float()
        x = stats.rows.float()
        ref = x @ w.t()
        x_mean = stats.abs_mean.float().clamp(min=1e-8)
        best: tuple[float, torch.Tensor] | None = None
        for alpha in ALPHA_GRID:
            s = x_mean.pow(alpha).clamp(min=1e-4)
            s = s / (s.max() * s.min()).sqrt()
            q, scale, mn = quantize_int4_rtn(w * s[None, :], self.group_size)
            w_eff = dequantize_int4(q, scale, mn, self.group_size) / s[None, :]
            err = float((x @ w_eff.t() - ref).pow(2).mean())
            if best is None or err < best[0]:
                best = (err, s)
        s = best[1]
        q, scale, mn = quantize_int4_rtn(w * s[None, :], self.group_size)
        return q, scale, mn, 1.0 / s
