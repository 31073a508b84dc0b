"""The run-folder contract: one layout for every experiment's results.

A run folder is ``results/<experiment>/<run_id>/`` (a sweep's: ``results/sweeps/<name>/``)::

    config.yaml        what was run: the resolved config or parameters (written first)
    env.json           git sha, package versions, python, platform, device, threads (+ extras)
    <table>.parquet    one file per table (``<table>.csv`` too where a notebook reads CSV)
    <chart>.png/.html  charts (PNG through vl-convert, offline; HTML with the spec)
    run.json           the manifest: kind, experiment, run_id, tables, charts, report columns
    metrics.json       flat, unit-suffixed metrics with ``schema_version``; written after
                       everything above, so a folder without it is half-written (its writer
                       crashed or is still running)
    report.md          regenerated from the files above by ``sagellm report RUN_DIR``

Every writer calls :func:`start_run` (config + env) and :func:`finish_run` (tables, charts,
manifest, metrics, report); :func:`read_run` is the one reader, and raises
:class:`RunFolderError` naming the path and what is wrong. Every file is written atomically
(:mod:`sagellm.core.io`): a reader never sees half of a file. Folders written before this
contract (no ``run.json``; ``config.json`` in some) are read as legacy runs when they hold a
``metrics.json``; the kind is then inferred from their files.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sagellm.benchmarks.results import SCHEMA_VERSION, make_run_id, params_hash, save_chart
from sagellm.core.errors import SageLLMError
from sagellm.core.io import atomic_write_json, atomic_write_parquet, atomic_write_text

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "run.json"
REPORT_FILE = "report.md"
LEGACY_CONFIG_FILE = "config.json"

_PACKAGES = ("sagellm", "torch", "transformers", "numpy", "pandas", "gguf", "papermill")


class RunFolderError(SageLLMError, ValueError):
    """A path is not a readable run folder; the message names the path and the problem."""


@dataclass(frozen=True)
class RunInfo:
    """What :func:`read_run` found in a run folder."""

    path: Path
    kind: str  # benchmark, quickstart, kv_policy_online, sweep, ... (the writer's name)
    config: dict[str, Any]
    env: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any] = field(default_factory=dict)  # {} for a legacy folder
    legacy: bool = False  # written before the contract (no run.json)


def environment(device: str = "cpu", num_threads: int | None = None) -> dict[str, object]:
    """git sha of the source tree (None outside a checkout), package versions, python,
    platform, processor, device and threads (torch's count unless given)."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        sha = None
    versions = {}
    for p in _PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = None
    if num_threads is None:
        import torch

        num_threads = torch.get_num_threads()
    return {
        "git_sha": sha,
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
        "num_threads": num_threads,
    }


def new_run_dir(results_root: str | Path, experiment: str, config: Mapping[str, Any]) -> Path:
    """``results_root/experiment/<run_id>`` with the run id of ``config``'s hash."""
    return Path(results_root) / experiment / make_run_id(params_hash(dict(config)))


def start_run(
    run_dir: str | Path,
    config: Mapping[str, Any],
    env_extra: Mapping[str, Any] | None = None,
    device: str = "cpu",
    num_threads: int | None = None,
) -> Path:
    """Write ``config.yaml`` and ``env.json`` into ``run_dir`` (created); returns it."""
    run_dir = Path(run_dir)
    plain = json.loads(json.dumps(dict(config), default=str))  # YAML-safe plain values
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(plain, sort_keys=False))
    atomic_write_json(run_dir / ENV_FILE, {**environment(device, num_threads), **(env_extra or {})})
    return run_dir


def finish_run(
    run_dir: str | Path,
    kind: str,
    metrics: Mapping[str, Any],
    tables: Mapping[str, Any] | None = None,
    charts: Mapping[str, Any] | None = None,
    csv_tables: Iterable[str] = (),
    report_columns: Mapping[str, list[str]] | None = None,
) -> Path:
    """Write the tables (pandas DataFrames, ``<name>.parquet``; also ``<name>.csv`` for the
    names in ``csv_tables``), the charts (altair charts, ``<name>.png/.html``), ``run.json``,
    ``metrics.json`` (``schema_version`` added; the completion mark) and ``report.md``;
    returns ``run_dir``.
    ``report_columns`` picks the columns the report shows per table (default: all)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunFolderError(f"{run_dir}: finish_run before start_run (no {CONFIG_FILE})")
    tables, charts, csv_tables = dict(tables or {}), dict(charts or {}), set(csv_tables)
    for name, df in tables.items():
        atomic_write_parquet(run_dir / f"{name}.parquet", df)
        if name in csv_tables:
            atomic_write_text(run_dir / f"{name}.csv", df.to_csv(index=False))
    for name, chart in charts.items():
        save_chart(chart, run_dir / name)
    manifest = {
        "kind": kind,
        "experiment": run_dir.parent.name,
        "run_id": run_dir.name,
        "schema_version": SCHEMA_VERSION,
        "tables": sorted(tables),
        "charts": sorted(charts),
        "report_columns": dict(report_columns or {}),
    }
    atomic_write_json(run_dir / MANIFEST_FILE, manifest)
    atomic_write_json(run_dir / METRICS_FILE, {"schema_version": SCHEMA_VERSION, **metrics})
    from sagellm.benchmarks.report import write_report

    write_report(run_dir)
    return run_dir


def write_experiment(
    results_root: str | Path,
    experiment: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    tables: dict[str, Any],
    run_id: str | None = None,
    *,
    kind: str | None = None,
    charts: Mapping[str, Any] | None = None,
    report_columns: Mapping[str, list[str]] | None = None,
    csv_tables: Iterable[str] = (),
) -> Path:
    """A whole run folder at once: ``results_root/experiment/<run_id>/`` (``run_id`` defaults
    to a fresh id of the params' hash); ``kind`` defaults to ``experiment``."""
    run_dir = Path(results_root) / experiment / (run_id or make_run_id(params_hash(params)))
    start_run(run_dir, params)
    return finish_run(
        run_dir, kind or experiment, metrics, tables, charts, csv_tables, report_columns
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"{path}: cannot read ({type(err).__name__}: {err})") from None


def _legacy_kind(path: Path) -> str:
    if (path / "repeats.json").is_file() and (path / "requests.parquet").is_file():
        return "benchmark"
    if (path / "completions.json").is_file():
        return "quickstart"
    if (path / "points").is_dir():
        return "sweep"
    return path.parent.name


def _not_a_run(path: Path) -> RunFolderError:
    inner = sorted(p.parent for p in path.glob("*/*/" + METRICS_FILE))
    hint = f"; it holds run folders, e.g. {inner[-1]}" if inner else ""
    return RunFolderError(
        f"{path}: not a run folder (no {CONFIG_FILE}, {METRICS_FILE} or {MANIFEST_FILE}); "
        f"a run folder is results/<experiment>/<run_id>/{hint}"
    )


def read_run(run_dir: str | Path) -> RunInfo:
    """Read a run folder; :class:`RunFolderError` when ``run_dir`` does not exist, is not a
    run folder, is half-written (``config.yaml`` or ``run.json`` but no ``metrics.json``) or
    has a corrupt file."""
    path = Path(run_dir)
    if not path.exists():
        raise RunFolderError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise RunFolderError(f"{path}: a file, not a run folder (results/<experiment>/<run_id>/)")
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file() and (path / LEGACY_CONFIG_FILE).is_file():
        cfg_path = path / LEGACY_CONFIG_FILE
    has_manifest = (path / MANIFEST_FILE).is_file()
    has_metrics = (path / METRICS_FILE).is_file()
    if not (cfg_path.is_file() or has_manifest or has_metrics):
        raise _not_a_run(path)
    if not has_metrics or not cfg_path.is_file():
        missing = METRICS_FILE if not has_metrics else CONFIG_FILE
        raise RunFolderError(
            f"{path}: half-written run (no {missing}): its writer crashed or is still running"
        )
    manifest = _read_json(path / MANIFEST_FILE) if has_manifest else {}
    if cfg_path.suffix == ".json":
        config = _read_json(cfg_path)
    else:
        try:
            config = yaml.safe_load(cfg_path.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise RunFolderError(f"{cfg_path}: cannot read ({type(err).__name__})") from None
    env = _read_json(path / ENV_FILE) if (path / ENV_FILE).is_file() else {}
    return RunInfo(
        path=path,
        kind=str(manifest.get("kind") or _legacy_kind(path)),
        config=config if isinstance(config, dict) else {"value": config},
        env=env,
        metrics=_read_json(path / METRICS_FILE),
        manifest=manifest,
        legacy=not has_manifest,
    )
