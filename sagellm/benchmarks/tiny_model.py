"""A tiny random Llama checkpoint for smoke runs (notebook ``ci`` presets): built locally with
transformers (nothing is downloaded), ~1 MB. Its outputs are noise; use it for plumbing and
timing shape, never for quality."""

from __future__ import annotations

import tempfile
from pathlib import Path

from sagellm.benchmarks.random_model import random_checkpoint

TINY_RANDOM = "tiny-random"  # the model name experiments map to this checkpoint


def tiny_random_checkpoint(folder: str | Path | None = None, seed: int = 0) -> Path:
    """Create (or reuse) the checkpoint under ``folder`` (a fresh temp dir when None)."""
    root = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="sagellm-tiny-"))
    return random_checkpoint(
        root, hidden_size=64, num_layers=2, vocab_size=512, intermediate_size=128, seed=seed
    )


def resolve_experiment_model(model: str) -> str:
    """``tiny-random`` -> a fresh tiny checkpoint folder; anything else unchanged."""
    return str(tiny_random_checkpoint()) if model == TINY_RANDOM else model
