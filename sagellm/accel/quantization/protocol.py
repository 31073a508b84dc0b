"""The contract a quantized weight meets: the model's ``linear`` calls ``linear(x)`` instead of
a dense matmul whenever a layer's weight is one of these.

Shapes: ``x`` is ``[T, in_features]`` in the model dtype; ``linear(x)`` returns
``[T, out_features]`` in the same dtype, equal (up to the kernel's rounding) to
``x @ dequantize().T``. ``num_bytes`` counts every tensor ``linear`` reads (values, scales,
zeros), i.e. the bytes a batch-1 decode step streams for this weight.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

# Above this many rows ``linear`` dequantizes the weight (one pass) and runs the dense GEMM:
# torch's int8/int4 CPU kernels cost time proportional to the rows (a GEMV per row), while a
# prefill chunk is compute-bound and amortises the dequantization. Decode steps of up to this
# many sequences stream the quantized bytes. Not tuned on an idle machine (see the benchmark's
# kernel sweep).
KERNEL_MAX_ROWS = 16


@runtime_checkable
class QuantLinear(Protocol):
    out_features: int
    in_features: int

    def linear(self, x: torch.Tensor) -> torch.Tensor: ...

    def dequantize(self) -> torch.Tensor:
        """The weight as the kernel sees it, ``[out_features, in_features]`` in fp32."""
        ...

    @property
    def num_bytes(self) -> int: ...
