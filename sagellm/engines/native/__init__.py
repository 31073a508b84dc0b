"""The embedded default engine: a Llama/Qwen2/Qwen3 decoder over a paged KV cache."""

from sagellm.engines.native.engine import NativeEngine

__all__ = ["NativeEngine"]
