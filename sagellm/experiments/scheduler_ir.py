"""Scheduling strategies side by side: SLO attainment and goodput vs Poisson request rate.

For every workload and rate, every strategy serves the same requests (same config and seed,
so the same prompts and arrival times) on the same native engine instance, whose every step is
the strategy's plan (``engine.strategy``; prefix caching on, the cache emptied before each
run so no strategy inherits another's blocks), through :class:`BenchmarkRunner`; each run
writes its own folder ``results_root/scheduler_ir_<strategy>/<run_id>/``. The sweep writes
``results_root/<experiment>/<run_id>/`` (the run-folder contract,
:mod:`sagellm.benchmarks.run_folder`): ``sweep.csv``/``.parquet`` (one row per workload x
strategy x rate, with the KV hit rate), ``sweep_runs`` (every round), ``metrics.json``
(totals), ``config.yaml``, ``env.json``, the comparison chart (PNG + HTML) and ``report.md``.

Tenants stand for request classes: the config's ``tenant_priority`` / ``tenant_model`` map
them to ``Request.priority`` / ``Request.model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.results import SCHEMA_VERSION, make_run_id
from sagellm.benchmarks.run_folder import finish_run, start_run
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
    "kv_hit_rate",
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
        id_vars=["workload", "strategy", "rate_per_s"],
        value_vars=["slo_attainment", "goodput_req_per_s", "kv_hit_rate", "p50_ttft_s"],
        var_name="metric",
    )
    return (
        alt.Chart(long)
        .mark_line(point=True)
        .encode(
            x=alt.X("rate_per_s:Q", title="request rate (req/s)"),
            y=alt.Y("value:Q", title=None),
            color="strategy:N",
            tooltip=["workload", "strategy", "rate_per_s", "metric", "value"],
        )
        .properties(width=200, height=160)
        .facet(column=alt.Column("metric:N", title=None), row=alt.Row("workload:N"))
        .resolve_scale(y="independent")
        .properties(title="Scheduling strategies on the native engine (same workload and seed)")
    )


def run_strategy_sweep(
    bases: BenchmarkConfig | dict[str, BenchmarkConfig],
    strategies: list[str],
    rates_per_s: list[float],
    results_root: str | Path = "results",
    experiment: str = "scheduler_ir_sweep",
    progress: bool = False,
    rounds: int = 1,
) -> StrategySweep:
    """Run every strategy at every rate on every workload (``bases``: one config, or several
    by name, all with the same engine config); returns the sweep folder and its table.

    With ``rounds > 1`` each rate is served ``rounds`` times by every strategy, interleaved
    and in a rotated order (round k starts with strategy k), so slow phases of a shared
    machine hit every strategy alike; the table holds the median over rounds and
    ``sweep_runs.csv`` every run.
    """
    import pandas as pd

    from sagellm.benchmarks.runner import BenchmarkRunner
    from sagellm.engines.native import NativeEngine
    from sagellm.scheduler_ir import make_strategy

    if isinstance(bases, BenchmarkConfig):
        bases = {bases.workload.kind: bases}
    for s in strategies:
        make_strategy(s)  # fail fast on an unknown name, before loading anything
    if any(r <= 0 for r in rates_per_s):
        raise ValueError(f"rates_per_s must all be > 0, got {rates_per_s}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds!r}")
    first = next(iter(bases.values()))
    if any(b.engine != first.engine for b in bases.values()):
        raise ValueError("every workload of a strategy sweep must use the same engine config")
    engine = NativeEngine(first.engine)
    _warm_up(engine, first)
    rows = []
    for wname, base in bases.items():
        for rate in rates_per_s:
            arrival = base.workload.arrival.model_copy(update={"rate_per_s": rate})
            wl = base.workload.model_copy(update={"arrival": arrival})
            for k in range(rounds * len(strategies)):
                rnd, j = divmod(k, len(strategies))
                name = strategies[(j + rnd) % len(strategies)]
                cfg = base.model_copy(update={"workload": wl, "experiment": f"scheduler_ir_{name}"})
                engine.strategy = make_strategy(name)
                engine.reset_prefix_cache()
                engine.reset_metrics()
                ir0 = engine.ir_stats()
                res = BenchmarkRunner(engine, progress=progress).run(cfg, results_root)
                m = res.metrics
                ir = {k: v - ir0[k] for k, v in engine.ir_stats().items()}
                total = ir["ir_s"] + ir["execute_s"]
                ir["ir_fraction"] = ir["ir_s"] / total if total > 0 else 0.0
                rows.append(
                    {
                        "workload": wname,
                        "strategy": name,
                        "rate_per_s": rate,
                        "round": rnd,
                        **{k: m.get(k) for k in COLUMNS},
                        "ir_fraction": ir["ir_fraction"],
                        "ir_ms_per_step": 1e3 * ir["ir_s"] / max(ir["num_plans"], 1.0),
                        "execute_ms_per_step": 1e3 * ir["execute_s"] / max(ir["num_plans"], 1.0),
                        "run_dir": str(res.run_dir) if res.run_dir else None,
                    }
                )
    runs = pd.DataFrame(rows)
    table = (
        runs.drop(columns=["run_dir", "round"])
        .groupby(["workload", "strategy", "rate_per_s"], sort=False)
        .median()
        .reset_index()
    )
    order = {s: i for i, s in enumerate(strategies)}
    table = table.sort_values(
        ["workload", "rate_per_s", "strategy"],
        key=lambda c: c.map(order) if c.name == "strategy" else c,
    ).reset_index(drop=True)
    root = Path(results_root)
    return _write_sweep(first, strategies, rates_per_s, table, runs, root, experiment)


def _warm_up(engine, base: BenchmarkConfig) -> None:
    """First-use costs (allocator growth, kernel selection) would otherwise land on whichever
    strategy runs first: run a few prompts of the workload's largest size before any run."""
    from sagellm.core.types import SamplingParams

    n = min(base.workload.prompt_tokens.max or base.workload.prompt_tokens.mean * 4, 512)
    engine.generate([[1] * n, [2] * max(1, n // 2)], SamplingParams(max_tokens=4, ignore_eos=True))
    engine.reset_metrics()


def _write_sweep(base, strategies, rates, table, runs, root: Path, experiment: str):
    spec = {
        "base": base.model_dump(mode="json"),
        "strategies": list(strategies),
        "rates_per_s": list(rates),
    }
    run_dir = root / experiment / make_run_id(config_hash(base))
    start_run(run_dir, spec)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "num_runs": float(len(runs)),
        "num_requests": float(runs["num_requests"].sum()),
        "num_completed": float(runs["num_completed"].sum()),
        "mean_ir_fraction": float(table["ir_fraction"].mean()),
        "max_ir_fraction": float(table["ir_fraction"].max()),
    }
    finish_run(
        run_dir,
        "scheduler_ir_sweep",
        metrics,
        {"sweep": table, "sweep_runs": runs},
        {"strategy_comparison": comparison_chart(table)},
        csv_tables=("sweep", "sweep_runs"),
    )
    return StrategySweep(run_dir, table, metrics)


def scheduler_ir_experiment(
    preset: str = "full",
    strategies: tuple[str, ...] = (
        "fifo",
        "priority",
        "slo_aware",
        "lpm",
        "hybrid",
        "adaptive",
        "aegaeon",
    ),
    rates_per_s: tuple[float, ...] = (16.0, 32.0, 64.0),
    num_requests: int = 40,
    hidden_size: int = 256,
    num_layers: int = 4,
    ttft_slo_s: float = 0.3,
    tpot_slo_s: float = 0.03,
    seed: int = 0,
    rounds: int = 2,
    results_root: str | Path = "results",
    models_root: str | Path | None = None,
) -> StrategySweep:
    """The notebook's experiment: a random Llama (``hidden_size`` x ``num_layers``) on the
    native engine with one CPU thread (a second thread on a shared 2-core machine makes
    steps 10-100x slower when a core is taken), prefix caching on, KV blocks scarce enough
    to preempt; two workloads with two tenants (interactive: priority 1 / model m0; batch:
    priority 0 / model m1) and Poisson arrivals: ``poisson`` (lognormal prompt lengths, no
    sharing) and ``shared_prefix`` (8 system prompts of 96 tokens + short unique parts: the
    pool cannot keep them all beside a full batch, so the order requests run in decides what
    stays cached);
    ``rounds`` interleaved repetitions. ``preset="ci"``: a 64-wide 2-layer model, 6
    requests, one rate, one round.
    """
    from sagellm.benchmarks.config import SLOConfig
    from sagellm.benchmarks.random_model import random_checkpoint
    from sagellm.benchmarks.workloads import ArrivalConfig, LengthDist, WorkloadConfig
    from sagellm.core.config import EngineConfig, ModelConfig

    if preset not in ("full", "ci"):
        raise ValueError(f"preset must be 'full' or 'ci', got {preset!r}")
    if preset == "ci":
        hidden_size, num_layers, num_requests, rates_per_s = 64, 2, 6, (rates_per_s[-1],)
        rounds = 1
    if models_root is None:
        from sagellm.engines.native.tokenizer import cache_dir

        models_root = cache_dir() / "random_models"
    ckpt = random_checkpoint(models_root, hidden_size=hidden_size, num_layers=num_layers)
    engine = EngineConfig(
        model=ModelConfig(path=str(ckpt)),
        num_threads=1,
        block_size_tokens=16,
        num_kv_blocks=56,  # scarce: preemption, and not every prefix stays cached
        max_num_seqs=8,
        max_num_batched_tokens=128,
        enable_prefix_caching=True,
        prefix_cache_per_tenant=False,  # one system prompt serves both request classes
    )
    common = dict(
        seed=seed,
        num_requests=num_requests,
        arrival=ArrivalConfig(process="poisson", rate_per_s=rates_per_s[0]),
        output_tokens=LengthDist(dist="lognormal", mean=24, std=16, min=2, max=96),
        tenants={"interactive": 1.0, "batch": 1.0},
    )
    workloads = {
        "poisson": WorkloadConfig(
            kind="tenant_mix",
            prompt_tokens=LengthDist(dist="lognormal", mean=96, std=64, min=8, max=384),
            **common,
        ),
        "shared_prefix": WorkloadConfig(
            kind="shared_prefix",
            num_groups=8,  # 8 x 6 blocks of prefix: more than the pool keeps beside the batch
            shared_prefix_tokens=96,
            prompt_tokens=LengthDist(dist="lognormal", mean=32, std=16, min=4, max=128),
            **common,
        ),
    }
    bases = {
        name: BenchmarkConfig(
            experiment="scheduler_ir",
            engine=engine,
            workload=wl,
            warmup_requests=1,
            slo=SLOConfig(ttft_s=ttft_slo_s, tpot_s=tpot_slo_s),
            tenant_priority={"interactive": 1, "batch": 0},
            tenant_model={"interactive": "m0", "batch": "m1"},
        )
        for name, wl in workloads.items()
    }
    return run_strategy_sweep(
        bases, list(strategies), list(rates_per_s), results_root, rounds=rounds
    )
