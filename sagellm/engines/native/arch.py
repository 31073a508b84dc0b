"""The architecture description the native model is built from (Llama / Qwen2 / Qwen3 family)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sagellm.core.errors import ModelLoadError

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn", "proportional")


@dataclass(frozen=True)
class ModelArch:
    """Shapes and options of a decoder-only transformer.

    Invariants: num_heads % num_kv_heads == 0; head_dim * num_heads need not equal hidden_size
    (Qwen3 sets head_dim explicitly).
    """

    family: str  # "llama" | "qwen2" | "qwen3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool  # bias on q/k/v projections
    o_bias: bool  # bias on the output projection
    mlp_bias: bool
    qk_norm: bool  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    inv_freq: torch.Tensor  # [head_dim // 2] fp32 RoPE inverse frequencies
    rope_attention_scaling: float  # multiplies cos/sin (yarn)
    eos_token_ids: tuple[int, ...]
    bos_token_id: int | None

    @property
    def num_params(self) -> int:
        """Parameters in the matmuls of the decoder (no embedding, no lm_head)."""
        h, d = self.hidden_size, self.head_dim
        attn = h * d * (self.num_heads * 2 + self.num_kv_heads * 2)
        mlp = 3 * h * self.intermediate_size
        return self.num_layers * (attn + mlp)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        elem = torch.empty((), dtype=dtype).element_size()
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * elem


def _rope(hf_config: Any) -> tuple[torch.Tensor, float]:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ModelLoadError(
            f"rope_parameters.rope_type {rope_type!r} is not supported; "
            f"supported: {list(SUPPORTED_ROPE_TYPES)}"
        )
    if rope_type == "default":
        dim = getattr(hf_config, "head_dim", None) or (
            hf_config.hidden_size // hf_config.num_attention_heads
        )
        base = params["rope_theta"]
        inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        return inv, 1.0
    inv, scale = ROPE_INIT_FUNCTIONS[rope_type](hf_config, torch.device("cpu"))
    return inv.float(), float(scale)


def arch_from_hf_config(hf_config: Any) -> ModelArch:
    """Build a :class:`ModelArch` from a transformers ``PretrainedConfig``."""
    archs = list(getattr(hf_config, "architectures", None) or [])
    family = None
    for a in archs:
        family = SUPPORTED_ARCHITECTURES.get(a)
        if family:
            break
    if family is None:
        family = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "llama"}.get(
            getattr(hf_config, "model_type", "")
        )
    if family is None:
        raise ModelLoadError(
            f"architectures {archs or hf_config.model_type!r} not supported; "
            f"supported: {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    if getattr(hf_config, "use_sliding_window", False) and getattr(
        hf_config, "sliding_window", None
    ):
        raise ModelLoadError("use_sliding_window=true is not supported by the native engine")
    heads = hf_config.num_attention_heads
    kv_heads = getattr(hf_config, "num_key_value_heads", None) or heads
    head_dim = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads
    inv_freq, scale = _rope(hf_config)
    eos = hf_config.eos_token_id
    eos_ids = tuple(eos) if isinstance(eos, list | tuple) else ((eos,) if eos is not None else ())
    cfg_bias = bool(getattr(hf_config, "attention_bias", False))
    return ModelArch(
        family=family,
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        intermediate_size=hf_config.intermediate_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=float(hf_config.rms_norm_eps),
        max_position_embeddings=int(hf_config.max_position_embeddings),
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        attention_bias=True if family == "qwen2" else cfg_bias,
        o_bias=False if family == "qwen2" else cfg_bias,
        mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
        qk_norm=family == "qwen3",
        inv_freq=inv_freq,
        rope_attention_scaling=scale,
        eos_token_ids=eos_ids,
        bos_token_id=getattr(hf_config, "bos_token_id", None),
    )
