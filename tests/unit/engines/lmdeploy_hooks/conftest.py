"""Fixtures of the LMDeploy patch tests: a freshly patched overlay (session scope) and the
patched paging classes imported from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from lmdeploy_testing import run_apply


@pytest.fixture(scope="session")
def patched_overlay(tmp_path_factory) -> Path:
    overlay = tmp_path_factory.mktemp("lmdeploy") / "overlay"
    r = run_apply(overlay)
    assert r.returncode == 0, r.stderr
    return overlay


@pytest.fixture(scope="session")
def paging(patched_overlay):
    """The patched lmdeploy paging module, imported from the overlay."""
    from sagellm.engines.lmdeploy import activate_overlay

    activate_overlay(patched_overlay)
    import lmdeploy
    from lmdeploy.pytorch.paging import scheduler

    assert Path(lmdeploy.__path__[0]).resolve() == (patched_overlay / "lmdeploy").resolve()
    assert Path(scheduler.__file__).resolve().is_relative_to(patched_overlay.resolve())
    return scheduler
