"""The committed ci copies of the notebooks that `make test` checks with ``pytest --nbval-lax``.

``tests/notebooks/ci/<name>.ipynb`` is ``notebooks/<name>.ipynb`` with papermill's ci parameters
injected (:data:`CI_PARAMETERS`), executed once by papermill, and stripped to the reference
outputs nbval compares: the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` (deterministic
results: greedy completions, cached-token counts, policy hit counts). Every other output is
dropped (nbval-lax runs those cells and fails only on an error).

Regenerate after changing a notebook or a deterministic result::

    python -m sagellm.benchmarks.notebook_refs [NAME ...]    # or: make nbval-refs

Invariants: a copy's cell sources equal the parameterized source notebook's
(:func:`parameterized_sources`; a test checks it, so copies cannot drift); ``results_root`` is
relative, so results land under the project's gitignored ``results/`` whatever folder the kernel
starts in.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from sagellm.core.paths import project_root

CI_PARAMETERS: dict[str, object] = {"preset": "ci", "results_root": "results/nbval"}
CHECK_MARKER = "NBVAL_CHECK_OUTPUT"


def is_checked(source: str) -> bool:
    """Whether nbval compares this cell's output (a ``# NBVAL_CHECK_OUTPUT`` comment line)."""
    return any(
        line.strip().startswith("#") and line.strip().lstrip("#").strip() == CHECK_MARKER
        for line in source.splitlines()
    )


def parameterized(source: Path):
    """``source`` with the ci parameters injected by papermill (not executed)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    return parameterize_notebook(load_notebook_node(str(source)), dict(CI_PARAMETERS))


def parameterized_sources(source: Path) -> list[str]:
    return [c.source for c in parameterized(source).cells]


def write_ci_reference(source: Path, out: Path) -> Path:
    """Execute ``source`` with the ci parameters (kernel started in the notebook's folder, as
    JupyterLab does) and write the stripped reference copy to ``out``."""
    import nbformat
    import papermill as pm

    with tempfile.TemporaryDirectory() as tmp:
        executed = Path(tmp) / source.name
        pm.execute_notebook(
            str(source),
            str(executed),
            parameters=dict(CI_PARAMETERS),
            kernel_name="python3",
            cwd=str(source.parent),
            progress_bar=False,
        )
        nb = nbformat.read(executed, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    for i, cell in enumerate(nb.cells):
        cell.id = str(i)
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code" and not is_checked(cell.source):
            cell.outputs = []  # execution counts stay: nbval rejects outputs of unrun cells
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="regenerate tests/notebooks/ci/*.ipynb (nbval refs)")
    p.add_argument("names", nargs="*", help="notebook names (default: every notebook)")
    args = p.parse_args(argv)
    root = project_root()
    sources = sorted((root / "notebooks").glob("*.ipynb"))
    if args.names:
        sources = [s for s in sources if s.stem in args.names or s.name in args.names]
    for src in sources:
        out = write_ci_reference(src, root / "tests" / "notebooks" / "ci" / src.name)
        print(f"wrote {out.relative_to(root)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
