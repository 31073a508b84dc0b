"""Weight quantization: one quantizer per method (int8, int4, awq, gptq, fp8), each producing a
:class:`QuantLinear` that the native model's ``linear`` dispatches to."""

from sagellm.accel.quantization.awq import AWQQuantizer
from sagellm.accel.quantization.base import BaseQuantizer, CalibrationStats
from sagellm.accel.quantization.calibration import (
    CALIBRATION_WINDOW_TOKENS,
    EVAL_SLICE_CHARS,
    RecordingLinear,
    calibration_text,
    evaluation_text,
)
from sagellm.accel.quantization.fp8 import FP8Linear, FP8Quantizer
from sagellm.accel.quantization.gptq import GPTQQuantizer
from sagellm.accel.quantization.int4 import (
    KERNEL_GROUP_SIZES,
    Int4Linear,
    Int4Quantizer,
    allowed_group_sizes,
    check_group_size,
    dequantize_int4,
)
from sagellm.accel.quantization.int8 import Int8Linear, Int8Quantizer
from sagellm.accel.quantization.protocol import QuantLinear
from sagellm.accel.quantization.registry import QUANTIZERS, make_quantizer

__all__ = [
    "CALIBRATION_WINDOW_TOKENS",
    "EVAL_SLICE_CHARS",
    "KERNEL_GROUP_SIZES",
    "QUANTIZERS",
    "AWQQuantizer",
    "BaseQuantizer",
    "CalibrationStats",
    "FP8Linear",
    "FP8Quantizer",
    "GPTQQuantizer",
    "Int4Linear",
    "Int4Quantizer",
    "Int8Linear",
    "Int8Quantizer",
    "QuantLinear",
    "RecordingLinear",
    "allowed_group_sizes",
    "calibration_text",
    "check_group_size",
    "dequantize_int4",
    "evaluation_text",
    "make_quantizer",
]
