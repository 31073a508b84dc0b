"""Analytic work of a Llama-shaped checkpoint for the peer benchmark: matmul FLOPs of a
workload (for MFU), weight bytes a batch-1 decode step streams (for the bandwidth roofline),
weight and KV-pool bytes (next to peak RSS). Read from the checkpoint's ``config.json``, so
every engine is measured against the same numbers.

FLOPs count 2 per multiply-add of the linears, the LM head and attention (QK^T and PV); norms,
activations and RoPE are ignored (well under 1%). A request of ``p`` prompt and ``o`` output
tokens forwards ``p + o - 1`` positions (the last token is never fed back); the LM head runs
at ``o`` of them (the prompt's last position and every decode step); the position at 0-based
index ``i`` attends ``i + 1`` keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The sizes that set the work (names as in HF's LlamaConfig)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> ModelShape:
        c = json.loads((Path(folder) / "config.json").read_text())
        heads = c["num_attention_heads"]
        return cls(
            hidden_size=c["hidden_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=c.get("num_key_value_heads") or heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // heads,
            intermediate_size=c["intermediate_size"],
            vocab_size=c["vocab_size"],
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
        )

    @property
    def layer_linear_params(self) -> int:
        """q, k, v, o and the gated MLP of one layer."""
        h, hd = self.hidden_size, self.head_dim
        attn = 2 * h * self.num_heads * hd + 2 * h * self.num_kv_heads * hd
        return attn + 3 * h * self.intermediate_size

    @property
    def lm_head_params(self) -> int:
        return self.vocab_size * self.hidden_size

    def weight_bytes(self, dtype: str) -> int:
        """Every parameter (embedding once when tied, norms included) in ``dtype``."""
        h = self.hidden_size
        emb = self.lm_head_params * (1 if self.tie_word_embeddings else 2)
        norms = (2 * self.num_layers + 1) * h
        return (self.num_layers * self.layer_linear_params + emb + norms) * DTYPE_BYTES[dtype]

    def decode_weight_bytes(self, dtype: str) -> int:
        """Weight bytes one decode step reads: every linear and the LM head (the embedding
        lookup reads one row, norms are negligible)."""
        n = self.num_layers * self.layer_linear_params + self.lm_head_params
        return n * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def request_flops(self, prompt_tokens: int, output_tokens: int) -> float:
        """Matmul FLOPs of one request run from scratch (see the module docstring)."""
        positions = prompt_tokens + output_tokens - 1
        linear = 2.0 * self.num_layers * self.layer_linear_params * positions
        head = 2.0 * self.lm_head_params * output_tokens
        keys = positions * (positions + 1) / 2  # sum of (i + 1) over the positions
        attn = 4.0 * self.num_layers * self.num_heads * self.head_dim * keys
        return linear + head + attn
