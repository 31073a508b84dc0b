"""Executed notebooks keep no widget state (``sagellm demo``, sweep points): nbconvert's static
HTML then shows each widget's text/html note instead of a blank widget-manager placeholder."""

import json

import nbformat
from nbconvert import HTMLExporter

from sagellm.benchmarks.widgets import drop_widget_state

VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"


def _executed_notebook(path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("controls")
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data",
            data={
                VIEW: {"model_id": "abc", "version_major": 2, "version_minor": 0},
                "text/html": "<p>STATIC NOTE: prompt, max_tokens</p>",
                "text/plain": "VBox()",
            },
        )
    ]
    nb.cells = [cell]
    nb.metadata["widgets"] = {STATE: {"state": {"abc": {}}, "version_major": 2, "version_minor": 0}}
    nbformat.write(nb, path)


def test_drop_widget_state_makes_static_html_show_the_note(tmp_path):
    path = tmp_path / "executed.ipynb"
    _executed_notebook(path)
    before, _ = HTMLExporter().from_filename(str(path))
    assert "STATIC NOTE" not in before  # the state makes nbconvert render a blank widget view
    assert drop_widget_state(path) is True
    assert "widgets" not in json.loads(path.read_text())["metadata"]
    after, _ = HTMLExporter().from_filename(str(path))
    assert "STATIC NOTE" in after
    assert before != after
    assert drop_widget_state(path) is False  # nothing left to drop
