"""What ``notebooks/00_quickstart.ipynb`` calls: generate with the native engine and write a
results folder (config, completions, per-request and per-step tables, metrics, charts)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from sagellm.benchmarks.metrics import compute_metrics
from sagellm.benchmarks.results import SCHEMA_VERSION, make_run_id, save_chart
from sagellm.core.config import DEFAULT_MODEL, EngineConfig, ModelConfig, config_hash
from sagellm.core.io import atomic_write_json, atomic_write_parquet, atomic_write_text
from sagellm.core.types import SamplingParams


@dataclass(frozen=True)
class QuickstartRun:
    run_dir: Path
    completions: list[dict[str, str]]
    metrics: dict[str, float | None]
    engine: object  # the NativeEngine, kept for interactive use


def run_quickstart(
    prompts: list[str],
    max_tokens: int = 48,
    model: str = DEFAULT_MODEL,
    dtype: str = "float32",
    num_threads: int | None = None,
    results_root: str | Path = "results",
    experiment: str = "quickstart",
) -> QuickstartRun:
    """Greedy chat completions of ``prompts``; returns the run folder and its metrics."""
    import altair as alt
    import pandas as pd

    from sagellm.engines.native import NativeEngine

    cfg = EngineConfig(model=ModelConfig(path=model, dtype=dtype), num_threads=num_threads)
    engine = NativeEngine(cfg)
    outs = engine.generate(prompts, SamplingParams(max_tokens=max_tokens))
    completions = [
        {"prompt": p, "completion": engine.tokenizer.decode(o)}
        for p, o in zip(prompts, outs, strict=True)
    ]
    reqs, steps = engine.request_metrics(), engine.step_metrics()
    metrics = {"schema_version": SCHEMA_VERSION, **compute_metrics(reqs, steps)}
    run_dir = Path(results_root) / experiment / make_run_id(config_hash(cfg))
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json")))
    atomic_write_json(run_dir / "completions.json", completions)
    atomic_write_json(run_dir / "metrics.json", metrics)
    t0 = min(r.arrival_s for r in reqs)
    req_df = pd.DataFrame([{**asdict(r), "token_times_s": None} for r in reqs])
    atomic_write_parquet(run_dir / "requests.parquet", req_df)
    step_df = pd.DataFrame([asdict(s) for s in steps])
    step_df["t_s"] = step_df["start_s"] - t0
    atomic_write_parquet(run_dir / "steps.parquet", step_df)
    tokens = pd.DataFrame(
        [
            {"request": r.request_id, "t_s": t - t0, "output_tokens": i + 1}
            for r in reqs
            for i, t in enumerate(r.token_times_s)
        ]
    )
    chart = (
        alt.Chart(tokens, title="Output tokens over time per request")
        .mark_line(point=True)
        .encode(x="t_s:Q", y="output_tokens:Q", color="request:N")
    )
    save_chart(chart, run_dir / "tokens_over_time")
    return QuickstartRun(run_dir, completions, metrics, engine)
