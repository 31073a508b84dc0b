"""Scheduling strategies side by side: SLO attainment and goodput vs Poisson request rate.

For every rate, every strategy serves the same workload (same config and seed, so the same
prompts and arrival times) on the same native engine instance, driven by IR plans
(:class:`~sagellm.scheduler_ir.PlanDrivenEngine`) through :class:`BenchmarkRunner`; each run
writes its own folder ``results_root/scheduler_ir_<strategy>/<run_id>/``. The sweep writes
``results_root/<experiment>/<run_id>/``: ``sweep.csv`` (one row per strategy x rate),
``metrics.json`` (totals), ``config.yaml`` and the comparison chart (PNG + HTML).

Tenants stand for request classes: ``tenant_priority`` maps them to ``Request.priority``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.results import (
    SCHEMA_VERSION,
    atomic_write_json,
    atomic_write_text,
    make_run_id,
    save_chart,
)
from sagellm.core.config import config_hash

COLUMNS = (
    "slo_attainment",
    "goodput_req_per_s",
    "request_throughput_per_s",
    "p50_ttft_s",
    "p95_ttft_s",
    "p50_tpot_s",
    "p95_tpot_s",
    "num_preemptions",
    "num_requests",
    "num_completed",
)


@dataclass(frozen=True)
class StrategySweep:
    run_dir: Path
    table: object  # pandas DataFrame, one row per (strategy, rate)
    metrics: dict[str, float]


def comparison_chart(table):
    """SLO attainment and goodput vs rate, one line per strategy."""
    import altair as alt

    long = table.melt(
        id_vars=["strategy", "rate_per_s"],
        value_vars=["slo_attainment", "goodput_req_per_s"],
        var_name="metric",
    )
    return (
        alt.Chart(long, title="Scheduling strategies on the native engine")
        .mark_line(point=True)
        .encode(
            x=alt.X("rate_per_s:Q", title="request rate (req/s)"),
            y=alt.Y("value:Q", title=None),
            color="strategy:N",
            tooltip=["strategy", "rate_per_s", "metric", "value"],
        )
        .properties(width=260, height=200)
        .facet(column=alt.Column("metric:N", title=None))
        .resolve_scale(y="independent")
    )


def run_strategy_sweep(
    base: BenchmarkConfig,
    strategies: list[str],
    rates_per_s: list[float],
    results_root: str | Path = "results",
    experiment: str = "scheduler_ir_sweep",
    tenant_priority: dict[str, int] | None = None,
    progress: bool = False,
) -> StrategySweep:
    """Run every strategy at every rate; returns the sweep folder and its table."""
    import pandas as pd

    from sagellm.benchmarks.runner import BenchmarkRunner
    from sagellm.engines.native import NativeEngine
    from sagellm.engines.native.plan_exec import NativePlanTarget
    from sagellm.scheduler_ir import PlanDrivenEngine, make_strategy

    for s in strategies:
        make_strategy(s)  # fail fast on an unknown name, before loading anything
    if any(r <= 0 for r in rates_per_s):
        raise ValueError(f"rates_per_s must all be > 0, got {rates_per_s}")
    engine = NativeEngine(base.engine)
    _warm_up(engine, base)
    rows = []
    for rate in rates_per_s:
        wl = base.workload.model_copy(
            update={"arrival": base.workload.arrival.model_copy(update={"rate_per_s": rate})}
        )
        for name in strategies:
            cfg = base.model_copy(update={"workload": wl, "experiment": f"scheduler_ir_{name}"})
            pe = PlanDrivenEngine(
                engine, NativePlanTarget(engine), name, tenant_priority=tenant_priority
            )
            res = BenchmarkRunner(pe, progress=progress).run(cfg, results_root)
            m = res.metrics
            ir = pe.ir_stats()
            rows.append(
                {
                    "strategy": name,
                    "rate_per_s": rate,
                    **{k: m.get(k) for k in COLUMNS},
                    "ir_fraction": ir["ir_fraction"],
                    "num_rejected_plans": ir["num_rejected_plans"],
                    "run_dir": str(res.run_dir) if res.run_dir else None,
                }
            )
    table = pd.DataFrame(rows)
    return _write_sweep(base, strategies, rates_per_s, table, Path(results_root), experiment)


def _warm_up(engine, base: BenchmarkConfig) -> None:
    """First-use costs (allocator growth, kernel selection) would otherwise land on whichever
    strategy runs first: run a few prompts of the workload's largest size before any run."""
    from sagellm.core.types import SamplingParams

    n = min(base.workload.prompt_tokens.max or base.workload.prompt_tokens.mean * 4, 512)
    engine.generate([[1] * n, [2] * max(1, n // 2)], SamplingParams(max_tokens=4, ignore_eos=True))
    engine.reset_metrics()


def _write_sweep(base, strategies, rates, table, root: Path, experiment: str) -> StrategySweep:
    spec = {
        "base": base.model_dump(mode="json"),
        "strategies": list(strategies),
        "rates_per_s": list(rates),
    }
    run_dir = root / experiment / make_run_id(config_hash(base))
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(spec))
    atomic_write_text(run_dir / "sweep.csv", table.to_csv(index=False))
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "num_runs": float(len(table)),
        "num_requests": float(table["num_requests"].sum()),
        "num_completed": float(table["num_completed"].sum()),
        "mean_ir_fraction": float(table["ir_fraction"].mean()),
        "max_ir_fraction": float(table["ir_fraction"].max()),
    }
    atomic_write_json(run_dir / "metrics.json", metrics)
    save_chart(comparison_chart(table), run_dir / "strategy_comparison")
    return StrategySweep(run_dir, table, metrics)
