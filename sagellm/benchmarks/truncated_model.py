"""A layer-truncated copy of a checkpoint: the first ``num_layers`` decoder layers, the final
norm and the (tied) output head of the source, written as an HF folder (fp32 safetensors,
config.json and the source's tokenizer). A cheap drafter with the target's vocabulary for
speculative decoding / CoT step drafting; nothing is downloaded. Same arguments -> the same
folder, reused when it already holds the checkpoint."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from sagellm.core.errors import ConfigError
from sagellm.engines.native.tokenizer import load_tokenizer
from sagellm.engines.native.weights import load_checkpoint
from sagellm.models import resolve_model_path

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")


def _hf_config(path: Path):
    from transformers import AutoConfig

    if path.is_dir():
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)


def truncated_checkpoint(source: str | Path, folder: str | Path, num_layers: int) -> Path:
    """Write (once) and return ``folder/<source name>-first<num_layers>``: the first
    ``num_layers`` layers of ``source`` (an HF folder, a ``.gguf`` file or a model alias).
    ConfigError unless ``1 <= num_layers <= `` the source's layers."""
    from safetensors.torch import save_file

    path = resolve_model_path(str(source))
    out = Path(folder) / f"{path.stem if path.is_file() else path.name}-first{num_layers}"
    if (out / "config.json").exists():
        return out
    ckpt = load_checkpoint(path, torch.float32)
    total = ckpt.arch.num_layers
    if isinstance(num_layers, bool) or not isinstance(num_layers, int):
        raise ConfigError(f"truncated_checkpoint.num_layers must be an integer, got {num_layers!r}")
    if not 1 <= num_layers <= total:
        raise ConfigError(
            f"truncated_checkpoint.num_layers must be in [1, {total}] (the source's layers), "
            f"got {num_layers}"
        )
    cfg = _hf_config(path)
    cfg.num_hidden_layers = num_layers
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = list(cfg.layer_types)[:num_layers]
    cfg.tie_word_embeddings = ckpt.arch.tie_word_embeddings
    state = {
        k: v.contiguous()
        for k, v in ckpt.state_dict.items()
        if (m := _LAYER.match(k)) is None or int(m.group(1)) < num_layers
    }
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    cfg.save_pretrained(str(tmp))
    if path.suffix == ".gguf" or (path.is_dir() and (path / "tokenizer.json").exists()):
        load_tokenizer(path).hf.save_pretrained(str(tmp))
    try:
        tmp.rename(out)
    except OSError:  # another process won the race: its checkpoint is identical
        shutil.rmtree(tmp, ignore_errors=True)
    return out
