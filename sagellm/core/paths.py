"""Paths relative to the project root, whatever folder the process (or a Jupyter kernel) starts in.

A Jupyter kernel's working folder is the notebook's folder (``notebooks/``), papermill's and
``make``'s is the repository root; resolving relative paths against the root makes both write to
the same ``results/`` and read the same inputs (e.g. ``../shared/data/traces/...``).

Invariants: absolute paths are returned unchanged; the root is the folder holding
``pyproject.toml`` above this package (a source checkout or editable install), else the current
working folder (an installed wheel has no project root).
"""

from __future__ import annotations

from pathlib import Path

_MARKER = "pyproject.toml"


def project_root() -> Path:
    """The repository root of this checkout (the current folder for a non-editable install)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / _MARKER).is_file() else Path.cwd()


def from_project_root(path: str | Path) -> Path:
    """``path`` if absolute, else ``path`` resolved against :func:`project_root`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else project_root() / p
