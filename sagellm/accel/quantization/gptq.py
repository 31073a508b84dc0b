"""GPTQ (Frantar et al., ICLR 2023): int4 groups chosen column by column with error feedback.

With ``H = 2 X^T X`` (X: the calibration inputs of this linear, [T, in]) the quantization error
of column ``k`` is spread over the not-yet-quantized columns through the inverse Hessian, so the
layer output ``X W^T`` moves as little as possible. Steps (as in the paper):

1. dead inputs (``H[k, k] == 0``) get ``H[k, k] = 1`` and weight column 0; add
   ``damp * mean(diag H)`` to the diagonal (``damp = 0.01``);
2. ``U = chol(H^-1)^T`` (upper Cholesky factor of the inverse);
3. for blocks of ``block_size`` columns, for each column ``k``: at a group's first column pick
   the group's (scale, min) from the current (error-updated) weights, quantize column ``k`` to
   the nearest level, ``e = (w_k - q_k) / U[k, k]``, ``W[:, k+1:block end] -= e U[k, k+1:]``;
   after the block, propagate its errors to the remaining columns at once.

Columns are taken in natural order (no act-order), so groups stay contiguous for the int4
kernel. Every layer's Hessian comes from one pass of the unquantized model.
"""

from __future__ import annotations

import torch

from sagellm.accel.quantization.base import CalibrationStats
from sagellm.accel.quantization.int4 import Int4Quantizer, int4_group_params, quantize_to_levels
from sagellm.core.errors import ConfigError

DAMP = 0.01


def _inverse_hessian_factor(h: torch.Tensor) -> torch.Tensor:
    """Upper Cholesky factor of ``H^-1`` (after damping)."""
    h = h + DAMP * h.diagonal().mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    hinv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(hinv, upper=True)


class GPTQQuantizer(Int4Quantizer):
    name = "gptq"
    needs_calibration = True
    needs_hessian = True
    block_size = 128

    def quantize_groups(
        self, weight: torch.Tensor, stats: CalibrationStats | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if stats is None or stats.hessian is None:
            raise ConfigError("accel.method 'gptq' needs calibration statistics with a Hessian")
        w = weight.double().clone()
        h = 2.0 * stats.hessian.double() / max(stats.num_tokens, 1)
        dead = h.diagonal() == 0
        h[dead, dead] = 1.0
        w[:, dead] = 0.0
        u = _inverse_hessian_factor(h)
        n, k = w.shape
        g = self.group_size
        q = torch.zeros(n, k, dtype=torch.int32, device=w.device)
        scale = torch.zeros(n, k // g, dtype=torch.float64, device=w.device)
        mn = torch.zeros_like(scale)
        block = max(self.block_size, g)
        for b0 in range(0, k, block):
            b1 = min(b0 + block, k)
            wb = w[:, b0:b1].clone()
            errs = torch.zeros_like(wb)
            for i in range(b1 - b0):
                col = b0 + i
                if col % g == 0:  # the group lies inside this block (block % g == 0)
                    scale[:, col // g], mn[:, col // g] = int4_group_params(wb[:, i : i + g])
                s, m = scale[:, col // g], mn[:, col // g]
                qc = quantize_to_levels(wb[:, i : i + 1], s, m)[:, 0]
                q[:, col] = qc.to(torch.int32)
                e = (wb[:, i] - (qc * s + m)) / u[col, col]
                wb[:, i:] -= e[:, None] * u[col, col:b1][None, :]
                errs[:, i] = e
            w[:, b1:] -= errs @ u[b0:b1, b1:]
        return q, scale.float(), mn.float(), None
