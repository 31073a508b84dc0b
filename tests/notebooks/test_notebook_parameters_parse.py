"""papermill reads notebook 03's parameters cell without a warning (its ``max_records`` line
used to be skipped: an ``=`` in its comment made papermill give up on the line).

01 and 02 have the same kind of line (``model = None  # None = ...``); they are another
change's to fix, so only 03 is checked here."""

import logging
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = [ROOT / "notebooks" / "03_kv_policy.ipynb"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_parses_without_warnings(nb, caplog):
    import nbformat
    from papermill.inspection import inspect_notebook

    caplog.set_level(logging.WARNING, logger="papermill")
    params = inspect_notebook(str(nb))
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("papermill")]
    book = nbformat.read(nb, as_version=4)
    cell = next(c for c in book.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {
        line.split("=", 1)[0].strip()
        for line in cell.source.splitlines()
        if "=" in line and line[:1].isidentifier()
    }
    assert set(params) == assigned  # every top-level assignment is a parameter papermill sees


def test_kv_policy_max_records_is_a_parameter():
    from papermill.inspection import inspect_notebook

    params = inspect_notebook(str(ROOT / "notebooks" / "03_kv_policy.ipynb"))
    assert params["max_records"]["default"] == "None"
