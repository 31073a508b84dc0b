"""``sagellm report RUN_DIR``: regenerate report.md and charts from a run folder's files."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from sagellm.benchmarks.results import save_chart
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


def _fmt(fmt: str, v) -> str:
    return "n/a" if v is None else fmt.format(v)


def ttft_cdf_chart(requests):
    import altair as alt

    df = requests.dropna(subset=["first_token_s"]).copy()
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df = df.sort_values("ttft_s")
    df["fraction"] = (df.groupby("repeat").cumcount() + 1) / df.groupby("repeat")[
        "ttft_s"
    ].transform("count")
    return (
        alt.Chart(df, title="TTFT CDF")
        .mark_line(interpolate="step-after")
        .encode(x="ttft_s:Q", y="fraction:Q", color="repeat:N")
    )


def write_report(run_dir: str | Path) -> Path:
    """(Re)write ``report.md`` and the charts of ``run_dir``; returns the report's path."""
    import pandas as pd

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    env = json.loads((run_dir / "env.json").read_text()) if (run_dir / "env.json").exists() else {}
    lines = [
        f"# {cfg.get('experiment', run_dir.parent.name)} / {run_dir.name}",
        "",
        f"- model: `{cfg['engine']['model']['path']}` ({cfg['engine']['model']['dtype']})",
        f"- workload: {cfg['workload']['kind']}, {cfg['workload']['num_requests']} requests, "
        f"mode {cfg['mode']}, repeats {cfg['repeats']}",
        f"- git {env.get('git_sha')}, {env.get('processor')}, {env.get('num_threads')} threads",
        *(
            [
                f"- backend: openai client against {env.get('base_url')}, served model "
                f"`{env.get('served_model')}` (the engine config above is not what the server "
                "ran; no step metrics client-side: MFU and comm share are n/a)"
            ]
            if env.get("backend") == "openai"
            else []
        ),
        "",
        "| metric | value |",
        "| --- | --- |",
    ]
    lines += [f"| {label} | {_fmt(fmt, metrics.get(k))} |" for k, label, fmt in _HEADLINE]
    charts = []
    req_path = run_dir / "requests.parquet"
    if req_path.exists():
        requests = pd.read_parquet(req_path)
        if len(requests):
            save_chart(ttft_cdf_chart(requests), run_dir / "ttft_cdf")
            charts.append("ttft_cdf.png")
    lines += ["", *[f"![{c}]({c})" for c in charts], ""]
    out = run_dir / "report.md"
    atomic_write_text(out, "\n".join(lines))
    return out
