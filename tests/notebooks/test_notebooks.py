"""Static checks of the notebooks (no execution: `make test` executes each notebook once, as
nbval runs the committed ci copies in ``tests/notebooks/ci/``, see
:mod:`sagellm.benchmarks.notebook_refs`)."""

from pathlib import Path

import nbformat
import pytest

from sagellm.benchmarks.notebook_refs import is_checked, parameterized_sources

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_and_stripped(nb):
    book = nbformat.read(nb, as_version=4)
    params = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    for c in book.cells:
        if c.cell_type != "code":
            continue
        assert not c.get("outputs"), "outputs must be stripped in git"
        for line in c.source.splitlines():
            assert not line.lstrip().startswith(("def ", "class ")), line
    code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
    if "import altair" in code:  # charts must draw offline (no CDN) in every renderer
        assert "enable_offline_charts()" in code, "call enable_offline_charts() in the imports"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_ci_copy_matches_notebook_and_has_references(nb):
    """The nbval copy is this notebook with the ci parameters injected (no drift), and every
    cell marked NBVAL_CHECK_OUTPUT carries its committed reference output."""
    copy = ROOT / "tests" / "notebooks" / "ci" / nb.name
    hint = "regenerate with `make nbval-refs`"
    assert copy.is_file(), f"{copy.name} missing: {hint}"
    ref = nbformat.read(copy, as_version=4)
    assert [c.source for c in ref.cells] == parameterized_sources(nb), f"stale copy: {hint}"
    for c in ref.cells:
        if c.cell_type == "code" and is_checked(c.source):
            assert c.outputs, f"no reference output for:\n{c.source}\n{hint}"
        elif c.cell_type == "code":
            assert not c.outputs, "only checked cells keep outputs"


def test_checked_cells_print_deterministic_results():
    """The quickstart (greedy completions), prefix reuse (cached-token counts) and kv_policy
    (hit counts on the fixed trace) notebooks each check at least one output."""
    for stem in ("00_quickstart", "01_prefix_reuse", "03_kv_policy"):
        book = nbformat.read(ROOT / "notebooks" / f"{stem}.ipynb", as_version=4)
        assert any(is_checked(c.source) for c in book.cells if c.cell_type == "code"), stem
