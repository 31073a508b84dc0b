"""Pieces of run folders (the contract itself: :mod:`sagellm.benchmarks.run_folder`): run ids,
parameter hashes, charts saved as PNG + HTML.

Every file is written atomically (:mod:`sagellm.core.io`), so a reader (or a crashed run)
never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from sagellm.core.io import atomic_write_bytes, atomic_write_text

SCHEMA_VERSION = 1


def make_run_id(config_hash: str) -> str:
    """``YYYYmmdd-HHMMSS-<config hash>-<pid>``: sortable, unique per process."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{config_hash}-{os.getpid()}"


def save_chart(chart, path_stem: Path) -> list[Path]:
    """Save an altair chart as PNG (vl-convert, offline), HTML that draws offline (the vega
    bundle inlined, :mod:`sagellm.benchmarks.charts`) and its Vega-Lite spec (``.vl.json``,
    which ``sagellm publish`` draws interactively); returns the paths."""
    import vl_convert as vlc

    from sagellm.benchmarks.charts import chart_page

    spec = chart.to_json()
    png = path_stem.with_suffix(".png")
    html = path_stem.with_suffix(".html")
    atomic_write_bytes(png, vlc.vegalite_to_png(spec, scale=2))
    spec_path = path_stem.with_name(path_stem.name + ".vl.json")
    atomic_write_text(html, chart_page(chart, title=path_stem.name))
    atomic_write_text(spec_path, spec)
    return [png, html, spec_path]


def params_hash(params: dict[str, Any], length: int = 8) -> str:
    """A short stable hash of plain experiment parameters (for run ids)."""
    import hashlib

    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
