"""The patched LMDeploy overlay: where it lives and how it goes first on ``sys.path``.

``third_party/apply_patches.sh`` builds the overlay (a mirror of the installed ``lmdeploy``
package whose patched files are real copies) and writes ``SAGELLM_PATCHES`` into it. Invariant
after :func:`activate_overlay`: ``import lmdeploy`` resolves to the overlay, so the paging
classes carry the sagellm hooks. Nothing here imports lmdeploy before the path is set.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from sagellm.core.errors import ConfigError
from sagellm.core.installed import ENGINE_INSTALL_HINTS, REPO_ROOT

#: The LMDeploy release the patch series is written against (= third_party/lmdeploy/VERSION,
#: kept equal by a test; a constant so a wheel install without third_party/ still imports).
LMDEPLOY_VERSION = "0.11.0"
STAMP_FILE = "SAGELLM_PATCHES"


def default_overlay_dir() -> Path:
    """``$SAGELLM_LMDEPLOY_OVERLAY`` or ``third_party/lmdeploy/overlay`` of this checkout."""
    env = os.environ.get("SAGELLM_LMDEPLOY_OVERLAY")
    return Path(env) if env else REPO_ROOT / "third_party" / "lmdeploy" / "overlay"


def applied_patches(overlay_dir: Path | None = None) -> list[str]:
    """Patch file names recorded in the overlay's stamp ([] when there is no overlay)."""
    stamp = (overlay_dir or default_overlay_dir()) / STAMP_FILE
    if not stamp.is_file():
        return []
    return stamp.read_text().splitlines()[1:]


def activate_overlay(overlay_dir: Path | None = None) -> list[str]:
    """Put the overlay first on ``sys.path``; returns the applied patch names.

    ConfigError when lmdeploy is not installed (naming the extra) or the overlay is missing
    (naming the script); RuntimeError when lmdeploy was already imported from elsewhere.
    """
    overlay = (overlay_dir or default_overlay_dir()).resolve()
    if importlib.util.find_spec("lmdeploy") is None and not (overlay / "lmdeploy").is_dir():
        raise ConfigError(
            f"engine.name: 'lmdeploy' needs the lmdeploy package, which is not installed; "
            f"{ENGINE_INSTALL_HINTS['lmdeploy']}"
        )
    patches = applied_patches(overlay)
    if not patches:
        raise ConfigError(
            f"engine.name: lmdeploy is installed but the sagellm patch series is not applied at "
            f"{overlay}; run third_party/apply_patches.sh (or `make lmdeploy`)"
        )
    loaded = sys.modules.get("lmdeploy")
    if loaded is not None:
        where = Path(loaded.__path__[0]).resolve()  # the package folder (its files are links)
        if where != overlay / "lmdeploy":
            raise RuntimeError(
                f"lmdeploy was already imported from {where}, not from the patched overlay "
                f"{overlay}; activate the overlay before anything imports lmdeploy"
            )
        return patches
    if str(overlay) not in sys.path:
        sys.path.insert(0, str(overlay))
    return patches
