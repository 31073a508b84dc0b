"""LMDeploy 0.11.0 and the environment it runs in.

Its wheel declares ``torch<=2.8.0``, ``triton<=3.4.0`` and ``transformers<=4.56.1`` (``make
lmdeploy`` installs it ``--no-deps`` beside newer ones, for the CPU tests of the paging layer).
Outside those bounds its PyTorch engine loads the weights exactly but computes other tokens:
on an H200 with torch 2.11, triton 3.6 and transformers 5.17, the unpatched engine's greedy
tokens differed from HF's from the first token on a tiny Llama (block size 64) and came out as
one token then zeros at block size 16. :func:`unsupported_versions` names such packages so the
engine refuses to run there rather than produce figures nobody can trust;
``SAGELLM_LMDEPLOY_ALLOW_UNSUPPORTED=1`` runs it anyway (the GPU test does, to show the gap).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

# lmdeploy 0.11.0's Requires-Dist upper bounds (inclusive)
LMDEPLOY_UPPER_BOUNDS = {"torch": "2.8.0", "triton": "3.4.0", "transformers": "4.56.1"}
ALLOW_ENV = "SAGELLM_LMDEPLOY_ALLOW_UNSUPPORTED"


def _release(version: str) -> tuple[int, ...]:
    """The numeric release of ``version`` ("2.11.0+cu130" -> (2, 11, 0))."""
    from packaging.version import Version

    return Version(version).release


def unsupported_versions(installed=importlib.metadata.version) -> list[str]:
    """``"torch 2.11.0 (lmdeploy 0.11.0 declares <=2.8.0)"`` for each installed package above
    LMDeploy 0.11.0's bound; empty where all are within (or absent)."""
    out = []
    for name, bound in LMDEPLOY_UPPER_BOUNDS.items():
        try:
            have = installed(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if _release(have) > _release(bound):
            out.append(f"{name} {have} (lmdeploy 0.11.0 declares <={bound})")
    return out


def transformers5_overrides(model_dir: str | Path) -> dict[str, Any] | None:
    """The HF config attributes LMDeploy 0.11 reads that transformers 5 no longer sets, as
    ``PytorchEngineConfig.hf_overrides``, or None when none is missing: transformers 5 keeps
    ``rope_theta`` only inside ``rope_parameters`` (LMDeploy's rotary embedding reads
    ``config.rope_theta``; ``rope_scaling`` still answers, as an alias of ``rope_parameters``)."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_dir)
    params = getattr(cfg, "rope_parameters", None)
    if hasattr(cfg, "rope_theta") or not isinstance(params, dict) or "rope_theta" not in params:
        return None
    return {"rope_theta": params["rope_theta"]}
