"""Random-weight HF checkpoints for fast, self-contained benchmarks (nothing is downloaded).

Scheduling experiments measure queueing and batching, not text quality, so a small random
Llama is a legitimate stand-in whose step time is set by its size. Same arguments -> same
weights (seeded) and the same folder, reused when it already holds the checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def random_checkpoint(
    folder: str | Path,
    hidden_size: int = 256,
    num_layers: int = 4,
    vocab_size: int = 4096,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 2048,
    seed: int = 0,
    intermediate_size: int | None = None,
) -> Path:
    """Write (once) and return a random Llama checkpoint folder under ``folder``
    (``intermediate_size`` defaults to 4 x ``hidden_size``)."""
    ffn = intermediate_size or hidden_size * 4
    name = f"llama-h{hidden_size}-l{num_layers}-v{vocab_size}-f{ffn}-s{seed}"
    out = Path(folder) / name
    if (out / "config.json").exists():
        return out  # without importing transformers (seconds of CPU)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=ffn,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=None,
        bos_token_id=None,
    )
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    LlamaForCausalLM(cfg).eval().save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process won the race: its checkpoint is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out
