"""Every notebook runs headless under papermill with its ci parameters."""

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.notebook
@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_ci_parameters(nb, tmp_path):
    import papermill as pm

    out = tmp_path / nb.name
    pm.execute_notebook(
        str(nb),
        str(out),
        parameters={"preset": "ci", "results_root": str(tmp_path / "results")},
        kernel_name="python3",
        cwd=str(ROOT),
    )
    executed = nbformat.read(out, as_version=4)
    errors = [
        o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    runs = list((tmp_path / "results").glob("*/*/metrics.json"))
    assert runs, "the notebook wrote no run folder"
    metrics = json.loads(runs[0].read_text())
    assert metrics["num_completed"] == metrics["num_requests"] > 0


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
