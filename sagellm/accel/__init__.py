"""accel: acceleration techniques behind :class:`AccelController` (``EngineConfig.accel``).

- ``accel.quantization``: weight quantizers (int8, int4, awq, gptq, fp8) and the int8 KV cache;
- ``accel.sparse``: StreamingLLM and Quest sparse attention over the paged KV cache;
- ``accel.speculative``: drafters (n-gram, layer skip, draft model), ``Verifier``,
  ``run_speculative_decode``;
- ``accel.cot``: ``CoTAccelController`` (speculative reasoning steps, early exit);
- ``perplexity`` and ``eval_data``: the accuracy side of every lossy technique.

The plan's names are re-exported here.
"""

from sagellm.accel.controller import AccelController, QuantizableModel
from sagellm.accel.speculative import DraftModel, Verifier, run_speculative_decode

__all__ = [
    "AccelController",
    "DraftModel",
    "QuantizableModel",
    "Verifier",
    "run_speculative_decode",
]
