"""The committed notebooks are fixed points of the git clean filter `make git-filters` installs
(nbstripout with the Makefile's extra keys), and carry the metadata JupyterLab writes, so opening,
running and saving one in JupyterLab leaves git clean (the browser test checks it end to end)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _extra_keys() -> str:
    m = re.search(r"^NBSTRIPOUT_EXTRA_KEYS := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "Makefile defines NBSTRIPOUT_EXTRA_KEYS"
    return m.group(1).strip()


def test_gitattributes_routes_notebooks_through_the_filter():
    assert "*.ipynb filter=nbstripout" in (ROOT / ".gitattributes").read_text()


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_a_fixed_point_of_the_filter(nb):
    text = nb.read_text()
    cleaned = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--extra-keys", _extra_keys(), "-t"],
        input=text, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert cleaned == text, f"{nb.name} changes under the git filter: run it through nbstripout"
    assert '"display_name": "Python 3 (ipykernel)"' in text  # what JupyterLab writes
