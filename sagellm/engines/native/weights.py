"""Checkpoint loading: HF folders (config.json + safetensors, sharded too) and GGUF files.

Both paths return the same thing: a :class:`ModelArch` and a state dict in HF parameter names
(``model.layers.0.self_attn.q_proj.weight`` ...), dequantized to ``dtype``. Any unreadable,
truncated or inconsistent file raises :class:`ModelLoadError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sagellm.core.errors import ModelLoadError
from sagellm.engines.native.arch import ModelArch, arch_from_hf_config

StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Checkpoint:
    arch: ModelArch
    state_dict: StateDict
    source: Path  # the folder or .gguf file the weights came from
    fmt: str  # "hf" | "gguf"


def load_checkpoint(path: Path, dtype: torch.dtype) -> Checkpoint:
    """Load an HF checkpoint folder or a ``.gguf`` file into ``dtype`` tensors on the CPU."""
    if path.is_dir():
        return _load_hf(path, dtype)
    if path.suffix == ".gguf":
        return _load_gguf(path, dtype)
    raise ModelLoadError(f"{path}: expected an HF checkpoint folder or a .gguf file")


# ----------------------------------------------------------------------------- HF folders


def _load_hf(folder: Path, dtype: torch.dtype) -> Checkpoint:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder}: no config.json (not an HF checkpoint folder)")
    try:
        hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:  # transformers raises several types for a bad config
        raise ModelLoadError(f"{folder / 'config.json'}: cannot parse: {err}") from None
    arch = arch_from_hf_config(hf_config)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as err:
            raise ModelLoadError(f"{index}: corrupt index: {err}") from None
        files = sorted({folder / f for f in weight_map.values()})
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{folder}: no .safetensors files")
    sd: StateDict = {}
    for f in files:
        if not f.is_file():
            raise ModelLoadError(f"{f}: listed in the index but missing")
        try:
            part = load_file(str(f))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise ModelLoadError(f"{f}: corrupt or truncated safetensors file: {err}") from None
        sd.update({k: v.to(dtype) for k, v in part.items()})
    return Checkpoint(arch, sd, folder, "hf")


# ----------------------------------------------------------------------------- GGUF


_GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GGUF_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_GGUF_ARCHS = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def _gguf_name(name: str) -> str:
    stem, _, kind = name.rpartition(".")
    if stem.startswith("blk."):
        _, idx, part = stem.split(".", 2)
        if part not in _GGUF_LAYER_NAMES:
            raise ModelLoadError(f"GGUF tensor {name!r} has no HF equivalent")
        return f"model.layers.{idx}.{_GGUF_LAYER_NAMES[part]}.{kind}"
    if stem not in _GGUF_GLOBAL_NAMES:
        raise ModelLoadError(f"GGUF tensor {name!r} has no HF equivalent")
    return f"{_GGUF_GLOBAL_NAMES[stem]}.{kind}"


def _unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's conversion-time q/k row permutation (interleaved -> half-split RoPE)."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(path: Path):
    """Open a GGUF file, turning every parse failure into a ModelLoadError."""
    import gguf

    try:
        return gguf.GGUFReader(str(path))
    except Exception as err:  # the reader raises ValueError/IndexError/struct errors on damage
        raise ModelLoadError(f"{path}: corrupt or truncated GGUF file: {err}") from None


def gguf_metadata(reader) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml."):
            continue  # large arrays; the tokenizer module reads them
        try:
            out[key] = field.contents()
        except Exception:
            continue
    return out


def _hf_config_from_gguf(meta: dict[str, object], vocab_size: int, path: Path):
    from transformers import AutoConfig

    arch = meta.get("general.architecture")
    if arch not in _GGUF_ARCHS:
        raise ModelLoadError(
            f"{path}: GGUF architecture {arch!r} not supported; supported: {sorted(_GGUF_ARCHS)}"
        )

    def need(key: str):
        full = f"{arch}.{key}"
        if full not in meta:
            raise ModelLoadError(f"{path}: GGUF metadata lacks {full!r}")
        return meta[full]

    heads = int(need("attention.head_count"))
    hidden = int(need("embedding_length"))
    kwargs = dict(
        architectures=[_GGUF_ARCHS[arch]],
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_hidden_layers=int(need("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(meta.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(meta.get(f"{arch}.attention.key_length", hidden // heads)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        max_position_embeddings=int(need("context_length")),
        rope_parameters={
            "rope_type": "default",
            "rope_theta": float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        },
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=meta.get("tokenizer.ggml.eos_token_id"),
    )
    return AutoConfig.for_model(arch, **kwargs)


def _load_gguf(path: Path, dtype: torch.dtype) -> Checkpoint:
    from gguf.quants import dequantize

    reader = open_gguf(path)
    meta = gguf_metadata(reader)
    try:
        vocab_size = len(reader.fields["tokenizer.ggml.tokens"].data)
    except KeyError:
        raise ModelLoadError(f"{path}: GGUF has no tokenizer.ggml.tokens") from None
    hf_config = _hf_config_from_gguf(meta, vocab_size, path)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    hf_config.tie_word_embeddings = not has_output
    arch = arch_from_hf_config(hf_config)
    sd: StateDict = {}
    for t in reader.tensors:
        try:
            arr = dequantize(t.data, t.tensor_type)
        except Exception as err:
            raise ModelLoadError(f"{path}: tensor {t.name!r} cannot be decoded: {err}") from None
        expected = tuple(int(x) for x in reversed(t.shape))
        try:
            arr = np.asarray(arr, dtype=np.float32).reshape(expected)
        except ValueError:
            raise ModelLoadError(
                f"{path}: tensor {t.name!r} has {arr.size} values, expected shape {expected} "
                "(truncated file?)"
            ) from None
        name = _gguf_name(t.name)
        if arch.family == "llama" and t.name.endswith(("attn_q.weight", "attn_k.weight")):
            n = arch.num_heads if ".attn_q." in t.name else arch.num_kv_heads
            arr = _unpermute_qk(arr, n)
        sd[name] = torch.from_numpy(arr.copy()).to(dtype)
    return Checkpoint(arch, sd, path, "gguf")
