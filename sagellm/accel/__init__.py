"""accel: acceleration techniques behind :class:`AccelController` (``EngineConfig.accel``).

Today: weight quantization (``accel.quantization``: int8, int4, awq, gptq, fp8) and the
evaluation data locator; sparse attention and speculative decoding come with their own changes.
"""

from sagellm.accel.controller import AccelController, QuantizableModel

__all__ = ["AccelController", "QuantizableModel"]
