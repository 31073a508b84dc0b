"""What ``notebooks/01_prefix_reuse.ipynb`` calls: prefix reuse on a real model, written to
``results/prefix_reuse/<run_id>/``.

Three measurements: (1) the shared-prefix workload with reuse off and on (TTFT p50, total
time, hit fraction, share of the ideal TTFT reduction); (2) hit rate and TTFT vs the shared
share of the prompt; (3) index lookup latency vs index size. Files (the run-folder
contract, :mod:`sagellm.benchmarks.run_folder`): ``config.yaml``, ``env.json``,
``metrics.json`` (flat, unit-suffixed; ``num_requests``/``num_completed`` count the timed
requests of (1)), ``requests.parquet``, ``share_sweep.parquet``, ``lookup.parquet``, charts and
``report.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.core.config import DEFAULT_MODEL
from sagellm.experiments.prefix_lookup_bench import lookup_latency
from sagellm.experiments.shared_prefix import (
    compare,
    make_engines,
    run_workload,
    shared_prefix_prompts,
)

PRESETS: dict[str, dict] = {
    "ci": dict(
        model="tiny-random",  # a smoke run: plumbing, not quality or speed
        num_requests=4,
        prefix_tokens=64,
        unique_tokens=16,
        output_tokens=2,
        share_requests=4,
        share_prompt_tokens=64,
        shares=[0.0, 0.5, 0.75],
        lookup_sizes=[1000, 10_000],
        num_lookups=200,
    ),
    "full": dict(
        model=DEFAULT_MODEL,
        num_requests=64,
        prefix_tokens=1024,
        unique_tokens=64,
        output_tokens=4,
        share_requests=16,
        share_prompt_tokens=256,
        shares=[0.0, 0.25, 0.5, 0.75, 0.9375],
        lookup_sizes=[1000, 10_000, 100_000, 1_000_000],
        num_lookups=2000,
    ),
}


@dataclass(frozen=True)
class ExperimentRun:
    run_dir: Path
    metrics: dict[str, float]
    tables: dict  # name -> pandas.DataFrame


def _share_sweep(off, on, p: dict) -> list[dict[str, float]]:
    rows = []
    for i, share in enumerate(p["shares"]):
        n_prefix = round(share * p["share_prompt_tokens"])
        n_unique = p["share_prompt_tokens"] - n_prefix
        prefix, prompts = shared_prefix_prompts(
            p["share_requests"], n_prefix, n_unique, on.arch.vocab_size, seed=100 + i
        )
        warm = [*prefix, 11]
        r_off = run_workload(off, prompts, p["output_tokens"], warm, f"s{i}-off")
        r_on = run_workload(on, prompts, p["output_tokens"], warm, f"s{i}-on")
        rows.append(
            {
                "prefix_share": share,
                "token_hit_rate": r_on.hit_fraction,
                "ttft_p50_off_s": r_off.ttft_p50_s,
                "ttft_p50_on_s": r_on.ttft_p50_s,
                "total_off_s": r_off.total_s,
                "total_on_s": r_on.total_s,
            }
        )
    return rows


def run_prefix_reuse_experiment(
    preset: str = "full",
    results_root: str | Path = "results",
    model: str | None = None,
    max_num_batched_tokens: int = 2048,
    **overrides: object,
) -> ExperimentRun:
    """Run the three measurements with ``PRESETS[preset]`` (plus ``overrides``); ``model``
    None = the preset's model."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    model = model or p.pop("model")
    p.pop("model", None)
    model_path = resolve_experiment_model(model)
    off, on = make_engines(model_path, max_num_batched_tokens=max_num_batched_tokens)
    prefix, prompts = shared_prefix_prompts(
        p["num_requests"], p["prefix_tokens"], p["unique_tokens"], on.arch.vocab_size
    )
    warm = [*prefix, 11]
    r_off = run_workload(off, prompts, p["output_tokens"], warm, "off")
    r_on = run_workload(on, prompts, p["output_tokens"], warm, "on")
    metrics: dict[str, float] = {"schema_version": float(SCHEMA_VERSION), **compare(r_off, r_on)}
    metrics["num_requests"] = float(r_on.num_requests)
    metrics["num_completed"] = float(min(r_on.num_completed, r_off.num_completed))
    requests = pd.DataFrame(
        [
            {"mode": mode, "request": i, "ttft_s": t}
            for mode, r in (("off", r_off), ("on", r_on))
            for i, t in enumerate(r.ttft_s)
        ]
    )
    sweep = pd.DataFrame(_share_sweep(off, on, p))
    lookup = pd.DataFrame([lookup_latency(n, p["num_lookups"]) for n in p["lookup_sizes"]])
    snap = on.kv.index.metrics.snapshot()
    metrics["index_lookup_p50_s"] = snap.lookup_p50_s or 0.0
    metrics["index_lookup_p99_s"] = snap.lookup_p99_s or 0.0
    params = {"preset": preset, "model": model, **p}
    tables = {"requests": requests, "share_sweep": sweep, "lookup": lookup}
    charts = _charts(requests, sweep)
    run_dir = write_experiment(results_root, "prefix_reuse", params, metrics, tables, charts=charts)
    return ExperimentRun(run_dir, metrics, tables)


def _charts(requests, sweep) -> dict:
    import altair as alt

    hit = (
        alt.Chart(sweep, title="Token hit rate vs shared share of the prompt")
        .mark_line(point=True)
        .encode(x="prefix_share:Q", y="token_hit_rate:Q")
    )
    ttft = (
        alt.Chart(requests, title="TTFT per request, reuse off vs on")
        .mark_boxplot()
        .encode(x="mode:N", y="ttft_s:Q")
    )
    return {"hit_rate_vs_share": hit, "ttft_on_off": ttft}
