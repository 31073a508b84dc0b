"""BaseQuantizer (the plan's ``BaseQuantizer.quantize``) and the calibration statistics the
activation-aware quantizers (AWQ, GPTQ) read.

A quantizer turns one dense weight ``[out_features, in_features]`` into a :class:`QuantLinear`.
Quantizers with ``needs_calibration`` also get the :class:`CalibrationStats` of that weight's
inputs, gathered by running the model over calibration text (see ``calibration.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from sagellm.accel.quantization.protocol import QuantLinear


@dataclass
class CalibrationStats:
    """What one linear layer saw on the calibration text (all fp32, on the weight's device).

    ``hessian`` is ``sum_t x_t x_t^T`` ([in, in]); ``abs_sum`` is ``sum_t |x_t|`` ([in]);
    ``rows`` a subsample of inputs ([<= max_rows, in]); ``num_tokens`` counts every row seen.
    """

    hessian: torch.Tensor | None
    abs_sum: torch.Tensor
    rows: torch.Tensor | None
    num_tokens: int

    @property
    def abs_mean(self) -> torch.Tensor:
        return self.abs_sum / max(self.num_tokens, 1)


class BaseQuantizer(ABC):
    """Turns dense weights into quantized linears; registered under its config name."""

    name: str = ""
    needs_calibration: bool = False
    needs_hessian: bool = False  # GPTQ: accumulate x x^T while calibrating
    needs_rows: bool = False  # AWQ: keep a sample of input rows

    @abstractmethod
    def quantize(self, weight: torch.Tensor, stats: CalibrationStats | None = None) -> QuantLinear:
        """``weight`` [out, in] in the model dtype -> a QuantLinear computing ``x @ W_q.T``."""
