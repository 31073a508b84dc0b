"""``sagellm report RUN_DIR``: (re)write ``report.md`` (and a benchmark's TTFT chart) from the
files of any run folder (:mod:`sagellm.benchmarks.run_folder`).

A benchmark gets its headline table (vLLM bench-serve metrics, MFU, KV hit, comm share, cost)
and the TTFT CDF; every other kind gets the generic report: parameters, every metric, the
first rows of each table (the columns the writer chose) and its charts. A folder that is not
a run, or a half-written one, raises :class:`~sagellm.benchmarks.run_folder.RunFolderError`.
"""

from __future__ import annotations

from pathlib import Path

from sagellm.benchmarks.report_markdown import markdown_table, scalar_text
from sagellm.benchmarks.run_folder import REPORT_FILE, RunInfo, read_run
from sagellm.benchmarks.ttft_chart import ttft_cdf_chart
from sagellm.core.io import atomic_write_text

_HEADLINE = [
    ("num_completed", "completed requests", "{:.0f}"),
    ("duration_s", "duration (s)", "{:.2f}"),
    ("request_throughput_per_s", "request throughput (req/s)", "{:.3f}"),
    ("output_throughput_tok_per_s", "output throughput (tok/s)", "{:.1f}"),
    ("mean_ttft_s", "mean TTFT (s)", "{:.4f}"),
    ("p50_ttft_s", "p50 TTFT (s)", "{:.4f}"),
    ("p95_ttft_s", "p95 TTFT (s)", "{:.4f}"),
    ("p50_tpot_s", "p50 TPOT (s)", "{:.4f}"),
    ("p95_tpot_s", "p95 TPOT (s)", "{:.4f}"),
    ("p50_itl_s", "p50 ITL (s)", "{:.4f}"),
    ("p99_e2el_s", "p99 E2EL (s)", "{:.3f}"),
    ("goodput_req_per_s", "goodput (req/s)", "{:.3f}"),
    ("mfu", "MFU", "{:.2%}"),
    ("kv_hit_rate", "KV hit rate", "{:.2%}"),
    ("comm_share", "comm share", "{:.2%}"),
    ("cost_device_s_per_token", "device-s per output token", "{:.5f}"),
]
MAX_TABLE_ROWS = 50  # rows of each table shown in a generic report


def _fmt(fmt: str, v) -> str:
    return "n/a" if v is None else fmt.format(v)


def _env_line(env: dict) -> str:
    if not env:
        return "- environment: not recorded (env.json missing)"
    return f"- git {env.get('git_sha')}, {env.get('processor')}, {env.get('num_threads')} threads"


def _benchmark_lines(run: RunInfo) -> list[str]:
    cfg, env = run.config, run.env
    lines = [
        f"- model: `{cfg['engine']['model']['path']}` ({cfg['engine']['model']['dtype']})",
        f"- workload: {cfg['workload']['kind']}, {cfg['workload']['num_requests']} requests, "
        f"mode {cfg['mode']}, repeats {cfg['repeats']}",
        _env_line(env),
    ]
    if env.get("backend") == "openai":
        lines.append(
            f"- backend: openai client against {env.get('base_url')}, served model "
            f"`{env.get('served_model')}` (the engine config above is not what the server "
            "ran; no step metrics client-side: MFU and comm share are n/a)"
        )
    lines += ["", "| metric | value |", "| --- | --- |"]
    lines += [f"| {label} | {_fmt(fmt, run.metrics.get(k))} |" for k, label, fmt in _HEADLINE]
    return lines


def _is_benchmark(run: RunInfo) -> bool:
    cfg = run.config
    return run.kind == "benchmark" and isinstance(cfg.get("engine"), dict) and "workload" in cfg


def _generic_lines(run: RunInfo) -> list[str]:
    import pandas as pd

    lines = [f"- kind: {run.kind}" + (" (written before the run-folder contract)" * run.legacy)]
    lines.append(_env_line(run.env))
    params = [(k, v) for k, v in run.config.items() if not isinstance(v, dict)]
    if params:
        lines += ["", "## parameters", "", "| parameter | value |", "| --- | --- |"]
        lines += [f"| {k} | {scalar_text(v)} |" for k, v in params]
    lines += ["", "## metrics", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {scalar_text(v)} |" for k, v in run.metrics.items()]
    names = run.manifest.get("tables") or sorted(p.stem for p in run.path.glob("*.parquet"))
    columns = run.manifest.get("report_columns", {})
    for name in names:
        path = run.path / f"{name}.parquet"
        if not path.is_file():
            lines += ["", f"## {name}", "", f"(missing: {path.name})"]
            continue
        df = pd.read_parquet(path)
        cols = [c for c in columns.get(name, df.columns) if c in df.columns]
        shown = f"first {MAX_TABLE_ROWS} of " if len(df) > MAX_TABLE_ROWS else ""
        lines += ["", f"## {name} ({shown}{len(df)} rows, `{path.name}`)", ""]
        lines.append(markdown_table(df[cols].head(MAX_TABLE_ROWS), digits=4))
    return lines


def write_report(run_dir: str | Path) -> Path:
    """(Re)write ``report.md`` of ``run_dir`` (and a benchmark's ``ttft_cdf`` chart); returns
    the report's path. RunFolderError when ``run_dir`` is not a complete run folder."""
    import pandas as pd

    from sagellm.benchmarks.results import save_chart

    run = read_run(run_dir)
    experiment = run.manifest.get("experiment") or run.config.get("experiment")
    lines = [f"# {experiment or run.path.parent.name} / {run.path.name}", ""]
    if _is_benchmark(run):
        lines += _benchmark_lines(run)
        req_path = run.path / "requests.parquet"
        if req_path.exists():
            requests = pd.read_parquet(req_path)
            if len(requests):
                save_chart(ttft_cdf_chart(requests), run.path / "ttft_cdf")
    else:
        lines += _generic_lines(run)
    charts = sorted(p.name for p in run.path.glob("*.png"))
    if charts:
        lines += ["", "## charts", "", *[f"![{c}]({c})" for c in charts]]
    out = run.path / REPORT_FILE
    atomic_write_text(out, "\n".join([*lines, ""]))
    return out
