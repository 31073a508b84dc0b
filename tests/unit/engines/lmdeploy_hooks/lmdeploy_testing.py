"""Helpers of the LMDeploy patch tests (imported by their conftest and test files)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[4]
APPLY = REPO / "third_party" / "apply_patches.sh"
NEEDS_LMDEPLOY = pytest.mark.skipif(
    importlib.util.find_spec("lmdeploy") is None,
    reason="lmdeploy is not installed (make lmdeploy installs it beside our torch)",
)


def run_apply(overlay: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(APPLY), str(overlay)],
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
