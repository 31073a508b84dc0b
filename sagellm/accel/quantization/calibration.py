"""Calibration: record what each linear layer sees while the model reads calibration text.

``RecordingLinear`` stands in for a dense weight (the model's ``linear`` calls its ``linear``),
computes the exact dense product and accumulates :class:`CalibrationStats` of its inputs:
``sum |x|`` always, ``sum x x^T`` when ``hessian=True`` (GPTQ), and up to ``max_rows`` input rows
(every ``row_stride``-th row of each call) when ``rows=True`` (AWQ).

The calibration text (fixed, never the evaluation slice): tinyshakespeare.txt from character
``EVAL_SLICE_CHARS`` on, its first ``accel.calibration_tokens`` tokens. Perplexity is measured on
the first ``EVAL_SLICE_CHARS`` characters, which calibration never reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sagellm.accel.quantization.base import CalibrationStats

EVAL_SLICE_CHARS = 100_000  # tinyshakespeare.txt[:100_000] is held out for evaluation
CALIBRATION_WINDOW_TOKENS = 512  # calibration text is read in independent windows of this size


def calibration_text(text: str, num_tokens: int) -> str:
    """Enough characters after the evaluation slice for ``num_tokens`` tokens (<= 8 chars each
    is generous for English BPE; the caller truncates the token ids)."""
    return text[EVAL_SLICE_CHARS : EVAL_SLICE_CHARS + 8 * num_tokens]


def evaluation_text(text: str) -> str:
    return text[:EVAL_SLICE_CHARS]


class RecordingLinear:
    """A dense weight that records its inputs' statistics (fp32 accumulators)."""

    def __init__(
        self,
        weight: torch.Tensor,
        hessian: bool = False,
        rows: bool = False,
        max_rows: int = 512,
        row_stride: int = 4,
    ) -> None:
        self.weight = weight
        self.out_features, self.in_features = weight.shape
        k, dev = self.in_features, weight.device
        self._hessian = torch.zeros(k, k, device=dev) if hessian else None
        self._abs_sum = torch.zeros(k, device=dev)
        self._rows: list[torch.Tensor] | None = [] if rows else None
        self._num_rows_kept = 0
        self.max_rows, self.row_stride = max_rows, row_stride
        self.num_tokens = 0

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        self.num_tokens += xf.shape[0]
        self._abs_sum += xf.abs().sum(dim=0)
        if self._hessian is not None:
            self._hessian.addmm_(xf.t(), xf)
        if self._rows is not None and self._num_rows_kept < self.max_rows:
            take = xf[:: self.row_stride][: self.max_rows - self._num_rows_kept]
            self._rows.append(take.clone())
            self._num_rows_kept += take.shape[0]
        return F.linear(x, self.weight)

    def dequantize(self) -> torch.Tensor:
        return self.weight.float()

    @property
    def num_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    def stats(self) -> CalibrationStats:
        rows = torch.cat(self._rows) if self._rows else None
        return CalibrationStats(self._hessian, self._abs_sum, rows, self.num_tokens)
