"""HF transformers as a reference engine: the correctness oracle and the speed baseline.

Loads the same checkpoint the native engine runs (an HF folder, or a GGUF file through
transformers' own GGUF loader, which needs ``accelerate``), so the two share no loading code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from sagellm.models import resolve_model_path

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_hf_model(path_or_alias: str, dtype: str = "float32"):
    """An ``AutoModelForCausalLM`` in eval mode on the CPU."""
    from transformers import AutoModelForCausalLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    p = resolve_model_path(path_or_alias)
    kw = {"dtype": _DTYPES[dtype]}
    if p.suffix == ".gguf":
        model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, **kw)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(Path(p)), local_files_only=True, **kw)
    return model.eval()


@torch.inference_mode()
def hf_greedy(model, prompts: list[list[int]], max_new_tokens: int, ignore_eos: bool) -> list:
    """Greedy continuations, one ``generate`` per prompt (no padding effects)."""
    outs = []
    for p in prompts:
        kw = {"min_new_tokens": max_new_tokens} if ignore_eos else {}
        ids = torch.tensor([p])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **kw,
        )
        outs.append(out[0, len(p) :].tolist())
    return outs


@torch.inference_mode()
def hf_batched_generate(model, prompts: list[list[int]], max_new_tokens: int) -> list:
    """One batched greedy ``generate`` over equal-length prompts, EOS ignored (speed baseline)."""
    lengths = {len(p) for p in prompts}
    if len(lengths) != 1:
        raise ValueError("hf_batched_generate needs equal-length prompts (no padding)")
    ids = torch.tensor(prompts)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
    )
    return out[:, ids.shape[1] :].tolist()
