"""A tiny random Llama checkpoint for smoke runs (notebook ``ci`` presets): built locally with
transformers (nothing is downloaded), saved once per folder, ~1 MB. Its outputs are noise;
use it for plumbing and timing shape, never for quality."""

from __future__ import annotations

import tempfile
from pathlib import Path

TINY_RANDOM = "tiny-random"  # the model name experiments map to this checkpoint


def tiny_random_checkpoint(folder: str | Path | None = None, seed: int = 0) -> Path:
    """Create (or reuse) the checkpoint in ``folder`` (a fresh temp dir when None)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="sagellm-tiny-"))
    if (path / "config.json").exists():
        return path
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=None,
        bos_token_id=None,
    )
    LlamaForCausalLM(cfg).eval().save_pretrained(path)
    return path


def resolve_experiment_model(model: str) -> str:
    """``tiny-random`` -> a fresh tiny checkpoint folder; anything else unchanged."""
    return str(tiny_random_checkpoint()) if model == TINY_RANDOM else model
