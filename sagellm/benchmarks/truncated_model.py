"""A layer-truncated copy of a checkpoint: the first ``num_layers`` decoder layers (or any
increasing subset, for layer skipping), the embeddings, final norm and output head of the
source, written as an HF folder (fp32 safetensors, config.json and the source's tokenizer).
A cheap drafter with the target's vocabulary for speculative decoding / CoT step drafting;
nothing is downloaded. Same arguments -> the same folder, reused when it already holds the
checkpoint."""

from __future__ import annotations

import itertools
import os
import re
import shutil
from collections.abc import Sequence
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


def _layers(num_layers: int | None, keep_layers: Sequence[int] | None, total: int) -> list[int]:
    if (num_layers is None) == (keep_layers is None):
        raise ConfigError("truncated_checkpoint: give exactly one of num_layers, keep_layers")
    if num_layers is not None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int):
            raise ConfigError(
                f"truncated_checkpoint.num_layers must be an integer, got {num_layers!r}"
            )
        if not 1 <= num_layers <= total:
            raise ConfigError(
                f"truncated_checkpoint.num_layers must be in [1, {total}] (the source's "
                f"layers), got {num_layers}"
            )
        return list(range(num_layers))
    keep = [int(i) for i in keep_layers]
    ok = (
        keep
        and all(0 <= i < total for i in keep)
        and all(a < b for a, b in itertools.pairwise(keep))
    )
    if not ok:
        raise ConfigError(
            f"truncated_checkpoint.keep_layers must be strictly increasing layer indices in "
            f"[0, {total}), at least one, got {list(keep_layers)!r}"
        )
    return keep


def _name(keep: list[int]) -> str:
    """``first10`` for a prefix of layers, else the kept ranges: ``layers0-9_20-29``."""
    if keep == list(range(len(keep))):
        return f"first{len(keep)}"
    runs, start = [], keep[0]
    for a, b in itertools.pairwise([*keep, None]):
        if b != a + 1:
            runs.append(f"{start}-{a}" if a != start else f"{a}")
            start = b
    return "layers" + "_".join(runs)


def truncated_checkpoint(
    source: str | Path,
    folder: str | Path,
    num_layers: int | None = None,
    keep_layers: Sequence[int] | None = None,
) -> Path:
    """Write (once) and return ``folder/<source name>-<layers>``: the first ``num_layers``
    decoder layers of ``source`` (an HF folder, a ``.gguf`` file or a model alias), or the
    layers ``keep_layers`` names (renumbered 0..; layer skipping). ConfigError for layers
    the source does not have."""
    from safetensors.torch import save_file

    path = resolve_model_path(str(source))
    ckpt = load_checkpoint(path, torch.float32)
    keep = _layers(num_layers, keep_layers, ckpt.arch.num_layers)
    out = Path(folder) / f"{path.stem if path.is_file() else path.name}-{_name(keep)}"
    if (out / "config.json").exists():
        return out
    cfg = _hf_config(path)
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None) is not None:
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    cfg.tie_word_embeddings = ckpt.arch.tie_word_embeddings
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for k, v in ckpt.state_dict.items():
        m = _LAYER.match(k)
        if m is None:
            state[k] = v.contiguous()
        elif int(m.group(1)) in new_index:
            state[f"model.layers.{new_index[int(m.group(1))]}.{k[m.end() :]}"] = v.contiguous()
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
