"""The embedded default engine: a Llama/Qwen2/Qwen3 decoder over a paged KV cache, and
several such engines time-sharing one weight budget (:class:`MultiModelEngine`)."""

from sagellm.engines.native.engine import NativeEngine
from sagellm.engines.native.multi_model import ModelSwitch, MultiModelEngine

__all__ = ["ModelSwitch", "MultiModelEngine", "NativeEngine"]
