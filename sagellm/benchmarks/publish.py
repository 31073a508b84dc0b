"""``sagellm publish RESULTS_DIR -o SITE_DIR``: a static HTML site of run folders and executed
notebooks that works offline (no CDN: the vega bundle ships once as ``static/vega-bundle.js``).

Site layout::

    index.html                 every run: its metrics table and a link to its page; notebooks;
                               what was skipped and why
    runs/<path>/index.html     one run: metrics, charts (interactive from ``*.vl.json`` specs,
                               else the PNG), report.md, links to every file (copied beside it)
    notebooks/<path>.html      each executed notebook (nbconvert, widget state dropped so the
                               widgets show their static note instead of a blank)
    static/vega-bundle.js

Invariants: a run folder is a folder holding ``metrics.json`` with a JSON object in it; a folder
with run files (``config.*``, ``env.json``, tables) but no readable ``metrics.json`` is a
half-written run, and a folder with files but no run files is not a run: both are named in the
index and in :attr:`Site.skipped`, never raise. Every link in the site is relative and points at
a file the site holds.
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from sagellm.core.errors import ConfigError
from sagellm.core.io import atomic_write_text

_RUN_FILES = ("config.yaml", "config.json", "env.json", "repeats.json", "report.md")
_RUN_SUFFIXES = (".parquet", ".csv")
_BUNDLE = "static/vega-bundle.js"
_STYLE = """<style>
body { font-family: sans-serif; margin: 2em; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; font-size: 90%; }
.sagellm-chart { margin: 1em 0; }
</style>"""


@dataclass
class Site:
    """What :func:`publish` wrote: run pages, notebook pages, and skipped folders with reasons."""

    site_dir: Path
    runs: list[Path] = field(default_factory=list)
    notebooks: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _read_metrics(run_dir: Path) -> dict[str, object] | str:
    """The metrics object, or why the folder is not a complete run."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return "half-written run: no metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"half-written run: metrics.json unreadable ({err})"
    if not isinstance(metrics, dict):
        return "half-written run: metrics.json is not a JSON object"
    return metrics


def _is_run_like(folder: Path) -> bool:
    return (
        (folder / "metrics.json").exists()
        or any((folder / n).exists() for n in _RUN_FILES)
        or any(p.suffix in _RUN_SUFFIXES for p in folder.iterdir() if p.is_file())
    )


def scan(results_dir: Path) -> tuple[list[tuple[Path, dict]], list[Path], list[tuple[Path, str]]]:
    """(runs with their metrics, executed notebooks, skipped folders with reasons), sorted."""
    runs, notebooks, skipped = [], [], []
    for folder in sorted([results_dir, *(p for p in results_dir.rglob("*") if p.is_dir())]):
        if any(part.startswith(".") for part in folder.relative_to(results_dir).parts):
            continue
        files = [p for p in folder.iterdir() if p.is_file()]
        notebooks += [p for p in files if p.suffix == ".ipynb"]
        if _is_run_like(folder):
            metrics = _read_metrics(folder)
            if isinstance(metrics, str):
                skipped.append((folder, metrics))
            else:
                runs.append((folder, metrics))
        elif (
            files
            and not any(p.is_dir() for p in folder.iterdir())
            and not all(p.suffix == ".ipynb" for p in files)
        ):
            skipped.append((folder, "not a run folder: no metrics.json"))
    return runs, sorted(notebooks), skipped


def _metrics_table(metrics: dict[str, object]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in metrics.items()
    )
    return f"<table class='metrics'>{rows}</table>"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return json.dumps(v) if isinstance(v, dict | list) else str(v)


def _page(title: str, body: str, depth: int, with_bundle: bool = False) -> str:
    up = "../" * depth
    script = f'<script src="{up}{_BUNDLE}"></script>' if with_bundle else ""
    return (
        f"<!DOCTYPE html>\n<html>\n<head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title>{_STYLE}{script}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _run_page(run_dir: Path, metrics: dict, rel: Path, out_dir: Path) -> str:
    from sagellm.benchmarks.charts import chart_fragment

    depth = len(rel.parts) + 1
    parts = [
        f"<p><a href='{'../' * depth}index.html'>index</a></p>",
        f"<h1>{html.escape(rel.as_posix())}</h1>",
        "<h2>Metrics</h2>",
        _metrics_table(metrics),
        "<h2>Charts</h2>",
    ]
    for spec_path in sorted(run_dir.glob("*.vl.json")):
        try:
            spec = json.loads(spec_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            parts.append(f"<p>chart {html.escape(spec_path.name)} unreadable: {err}</p>")
            continue
        parts.append(f"<h3>{html.escape(spec_path.name.removesuffix('.vl.json'))}</h3>")
        parts.append(chart_fragment(spec, inline_bundle=False))
    for png in sorted(run_dir.glob("*.png")):
        if not png.with_name(png.stem + ".vl.json").exists():
            parts.append(f"<h3>{html.escape(png.stem)}</h3><img src='{png.name}' width='600'>")
    report = run_dir / "report.md"
    if report.is_file():
        import mistune

        parts.append("<h2>report.md</h2>" + mistune.html(report.read_text()))
    files = []
    for p in sorted(run_dir.iterdir()):
        if p.is_file():
            shutil.copy2(p, out_dir / p.name)
            files.append(f"<li><a href='{html.escape(p.name)}'>{html.escape(p.name)}</a></li>")
    parts.append("<h2>Files</h2><ul>" + "".join(files) + "</ul>")
    return _page(rel.as_posix(), "\n".join(parts), depth, with_bundle=True)


def _notebook_html(path: Path) -> str:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # no widget manager offline: show each widget's text/html
    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def publish(results_dir: str | Path, site_dir: str | Path) -> Site:
    """Render every run folder and executed notebook under ``results_dir`` into ``site_dir``."""
    from sagellm.benchmarks.charts import vega_bundle_js

    results_dir, site_dir = Path(results_dir), Path(site_dir)
    if not results_dir.is_dir():
        raise ConfigError(f"results_dir: {str(results_dir)!r} is not a folder")
    runs, notebooks, skipped = scan(results_dir)
    site = Site(site_dir, skipped=list(skipped))
    atomic_write_text(site_dir / _BUNDLE, vega_bundle_js())
    index = [f"<h1>sagellm results: {html.escape(str(results_dir))}</h1>", "<h2>Runs</h2>"]
    for run_dir, metrics in runs:
        rel = run_dir.relative_to(results_dir)
        out_dir = site_dir / "runs" / rel
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "index.html", _run_page(run_dir, metrics, rel, out_dir))
        site.runs.append(out_dir / "index.html")
        href = html.escape(f"runs/{rel.as_posix()}/index.html")
        index.append(f"<h3><a href='{href}'>{html.escape(rel.as_posix())}</a></h3>")
        index.append(_metrics_table(metrics))
    if not runs:
        index.append("<p>no run folders found</p>")
    index.append("<h2>Notebooks</h2><ul>")
    for nb in notebooks:
        rel = nb.relative_to(results_dir).with_suffix(".html")
        try:
            text = _notebook_html(nb)
        except Exception as err:  # a broken notebook is named, the rest still publishes
            site.skipped.append((nb, f"notebook not rendered: {type(err).__name__}: {err}"))
            continue
        atomic_write_text(site_dir / "notebooks" / rel, text)
        site.notebooks.append(site_dir / "notebooks" / rel)
        href = html.escape(f"notebooks/{rel.as_posix()}")
        index.append(f"<li><a href='{href}'>{html.escape(nb.name)}</a></li>")
    index.append("</ul>")
    if site.skipped:
        index.append("<h2>Skipped</h2><ul>")
        index += [f"<li>{html.escape(str(p))}: {html.escape(why)}</li>" for p, why in site.skipped]
        index.append("</ul>")
    atomic_write_text(site_dir / "index.html", _page("sagellm results", "\n".join(index), 0))
    return site
