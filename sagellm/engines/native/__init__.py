"""The embedded default engine: a Llama/Qwen2/Qwen3 decoder over a paged KV cache, and
several such engines time-sharing one weight budget (:class:`MultiModelEngine`). With
``EngineConfig.tp_size > 1`` one engine spans that many processes (``tp_group``)."""

from sagellm.engines.native.engine import NativeEngine
from sagellm.engines.native.multi_model import ModelSwitch, MultiModelEngine
from sagellm.engines.native.tp_group import TPUnsupportedError, TPWorkerLostError

__all__ = [
    "ModelSwitch",
    "MultiModelEngine",
    "NativeEngine",
    "TPUnsupportedError",
    "TPWorkerLostError",
]
