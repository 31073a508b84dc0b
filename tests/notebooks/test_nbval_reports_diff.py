"""A notebook whose checked output changed fails under ``pytest --nbval-lax`` with a readable
diff, and the other notebooks are still checked (nbval's items are per cell, per notebook)."""

import subprocess
import sys

import nbformat


def _notebook(cells: list[tuple[str, str | None]]):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    for i, (source, stdout) in enumerate(cells):
        c = nbformat.v4.new_code_cell(source, execution_count=i + 1)
        if stdout is not None:
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=stdout)]
        nb.cells.append(c)
    return nb


def test_changed_checked_output_fails_with_diff_others_still_checked(tmp_path):
    marked = "# NBVAL_CHECK_OUTPUT\nprint(sum(range(10)))"
    nbformat.write(_notebook([("x = 1", None), (marked, "44\n")]), tmp_path / "a_changed.ipynb")
    nbformat.write(_notebook([(marked, "45\n"), ("print('unchecked')", "other\n")]),
                   tmp_path / "b_same.ipynb")  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--nbval-current-env", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 3 passed" in out, out
    assert "a_changed.ipynb" in out and "44" in out and "45" in out, out
