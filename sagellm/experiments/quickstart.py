"""What ``notebooks/00_quickstart.ipynb`` calls: generate with the native engine and write a
run folder (kind ``quickstart``, :mod:`sagellm.benchmarks.run_folder`): config.yaml (engine
config, prompts, max_tokens), env.json, completions.json and completions/requests/steps
tables, metrics.json, the tokens-over-time chart and report.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sagellm.benchmarks.metrics import compute_metrics
from sagellm.benchmarks.results import SCHEMA_VERSION, make_run_id
from sagellm.benchmarks.run_folder import finish_run, start_run
from sagellm.core.config import DEFAULT_MODEL, EngineConfig, ModelConfig, config_hash
from sagellm.core.io import atomic_write_json
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
    params = {"prompts": list(prompts), "max_tokens": max_tokens}
    start_run(run_dir, {**params, "engine": cfg.model_dump(mode="json")}, device=str(engine.device))
    atomic_write_json(run_dir / "completions.json", completions)
    t0 = min(r.arrival_s for r in reqs)
    req_df = pd.DataFrame([{**asdict(r), "token_times_s": None} for r in reqs])
    step_df = pd.DataFrame([asdict(s) for s in steps])
    step_df["t_s"] = step_df["start_s"] - t0
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
    tables = {"completions": pd.DataFrame(completions), "requests": req_df, "steps": step_df}
    finish_run(
        run_dir,
        "quickstart",
        metrics,
        tables,
        {"tokens_over_time": chart},
        report_columns={
            "requests": ["request_id", "num_prompt_tokens", "num_output_tokens", "finish_reason"],
            "steps": ["t_s", "num_seqs", "num_prefill_tokens", "num_decode_tokens", "compute_s"],
        },
    )
    return QuickstartRun(run_dir, completions, metrics, engine)
