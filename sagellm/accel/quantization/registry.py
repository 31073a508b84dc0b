"""Quantizers by the name ``accel.method`` uses; the names equal ``core.config.QUANT_METHOD_NAMES``
(a test keeps them equal). Unknown names fail with the known ones listed."""

from __future__ import annotations

from collections.abc import Callable

from sagellm.accel.quantization.awq import AWQQuantizer
from sagellm.accel.quantization.base import BaseQuantizer
from sagellm.accel.quantization.fp8 import FP8Quantizer
from sagellm.accel.quantization.gptq import GPTQQuantizer
from sagellm.accel.quantization.int4 import Int4Quantizer
from sagellm.accel.quantization.int8 import Int8Quantizer
from sagellm.core.errors import ConfigError

QUANTIZERS: dict[str, Callable[[int], BaseQuantizer]] = {
    "awq": AWQQuantizer,
    "fp8": lambda group_size: FP8Quantizer(),
    "gptq": GPTQQuantizer,
    "int4": Int4Quantizer,
    "int8": lambda group_size: Int8Quantizer(),
}


def make_quantizer(method: str, group_size: int = 64) -> BaseQuantizer:
    """The quantizer ``accel.method`` names (``group_size`` is used by int4/awq/gptq)."""
    factory = QUANTIZERS.get(method)
    if factory is None:
        raise ConfigError(
            f"accel.method: unknown quantization method {method!r}; known: {sorted(QUANTIZERS)}"
        )
    return factory(group_size)
