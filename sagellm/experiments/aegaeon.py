"""Aegaeon on two real, different checkpoints: what a model switch costs and what the quotas
make of it.

Two tenants send Poisson traffic, one per model (``BenchmarkConfig.tenant_model`` maps a
tenant to ``Request.model``), to a :class:`~sagellm.engines.native.MultiModelEngine` whose
weight budget holds one model at a time, so every change of model reloads weights from disk.
The :class:`~sagellm.scheduler_ir.strategies.AegaeonStrategy` picks the model per step and
learns the switch cost from the engine's timed loads. The run folder
(``results_root/aegaeon_two_models/<run_id>/``, written by the runner: config, env, metrics,
requests, steps, report) gets ``aegaeon.json`` (measured c0, switches, quotas, models) and
``switches.parquet`` (one row per weight load during the measured repeat).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from sagellm.core.io import atomic_write_json, atomic_write_parquet

EXPERIMENT = "aegaeon_two_models"


@dataclass(frozen=True)
class AegaeonRun:
    run_dir: Path | None
    summary: dict[str, object]  # what aegaeon.json holds
    metrics: dict[str, float | None]  # the runner's metrics (TTFT, TPOT, SLO attainment ...)


def _models(preset: str, models_root: Path) -> dict[str, str]:
    """Model name -> checkpoint (alias or folder): different sizes, different weights."""
    from sagellm.benchmarks.random_model import random_checkpoint

    if preset == "ci":
        small = random_checkpoint(models_root, hidden_size=64, num_layers=2, vocab_size=512)
        big = random_checkpoint(models_root, hidden_size=128, num_layers=3, vocab_size=512, seed=1)
        return {"tiny-h64": str(small), "tiny-h128": str(big)}
    other = random_checkpoint(models_root, hidden_size=256, num_layers=4, seed=1)
    return {"smollm2-135m": "smollm2-135m-instruct", "random-h256": str(other)}


def aegaeon_two_models(
    preset: str = "full",
    num_requests: int = 16,
    rate_per_s: float = 2.0,
    ttft_slo_s: float = 2.0,
    tpot_slo_s: float = 0.1,
    weight_budget_bytes: int | None = None,
    seed: int = 0,
    results_root: str | Path | None = "results",
    models_root: str | Path | None = None,
) -> AegaeonRun:
    """Serve a two-model Poisson workload (``num_requests`` at ``rate_per_s``) under aegaeon
    on one CPU thread; ``weight_budget_bytes`` None holds the larger model only.

    ``preset="full"``: SmolLM2-135M-Instruct (GGUF, dequantized at every load) and a random
    256-wide 4-layer Llama. ``preset="ci"``: two tiny random Llamas (64x2 and 128x3), 6
    requests. Returns the summary (also in ``aegaeon.json``) and the runner's metrics.
    """
    from sagellm.benchmarks.config import BenchmarkConfig, SLOConfig
    from sagellm.benchmarks.runner import BenchmarkRunner
    from sagellm.benchmarks.workloads import ArrivalConfig, LengthDist, WorkloadConfig
    from sagellm.core.config import EngineConfig, ModelConfig
    from sagellm.engines.native import MultiModelEngine
    from sagellm.scheduler_ir.strategies import AegaeonStrategy

    if preset not in ("full", "ci"):
        raise ValueError(f"preset must be 'full' or 'ci', got {preset!r}")
    if models_root is None:
        from sagellm.engines.native.tokenizer import cache_dir

        models_root = cache_dir() / "random_models"
    paths = _models(preset, Path(models_root))
    if preset == "ci":
        num_requests, rate_per_s = 6, 8.0
    out_len = 8 if preset == "ci" else 16
    cfgs = {
        name: EngineConfig(
            model=ModelConfig(path=path),
            num_threads=1,
            num_kv_blocks=64,
            max_num_seqs=8,
            max_num_batched_tokens=256,
        )
        for name, path in paths.items()
    }
    strategy = AegaeonStrategy(tpot_slo_s=tpot_slo_s)
    engine = MultiModelEngine(cfgs, weight_budget_bytes, strategy)
    names = list(paths)
    tenants = {f"tenant-{m}": m for m in names}
    config = BenchmarkConfig(
        experiment=EXPERIMENT,
        engine=cfgs[names[0]],
        tenant_model=tenants,
        workload=WorkloadConfig(
            kind="tenant_mix",
            seed=seed,
            num_requests=num_requests,
            arrival=ArrivalConfig(process="poisson", rate_per_s=rate_per_s),
            prompt_tokens=LengthDist(dist="lognormal", mean=48, std=24, min=4, max=192),
            output_tokens=LengthDist(
                dist="uniform", mean=out_len, min=out_len // 2, max=out_len * 2
            ),
            tenants=dict.fromkeys(tenants, 1.0),
        ),
        warmup_requests=1,
        slo=SLOConfig(ttft_s=ttft_slo_s, tpot_s=tpot_slo_s),
    )
    runner = BenchmarkRunner(engine, progress=False)
    result = runner.run(config, results_root=results_root)
    summary = _summary(engine, strategy, result, tpot_slo_s, paths)
    if result.run_dir is not None:
        import pandas as pd

        atomic_write_json(result.run_dir / "aegaeon.json", summary)
        rows = [asdict(s) for s in _run_switches(engine, result)]
        atomic_write_parquet(result.run_dir / "switches.parquet", pd.DataFrame(rows))
    engine.close()
    return AegaeonRun(result.run_dir, summary, result.metrics)


def _run_switches(engine, result) -> list:
    """The weight loads inside the measured repeat's time window (not the warm-up's)."""
    reqs = result.repeats[-1].requests
    t0 = min(r.arrival_s for r in reqs)
    t1 = max((r.finished_s or r.arrival_s) for r in reqs)
    return [s for s in engine.switches if t0 <= s.start_s <= t1]


def _summary(engine, strategy, result, tpot_slo_s: float, paths: dict[str, str]) -> dict:
    from sagellm.scheduler_ir.strategies import aegaeon_quotas

    switches = _run_switches(engine, result)
    loads = [s.load_s for s in switches]
    mean_switch_s = sum(loads) / len(loads) if loads else None
    n = len(engine.models)
    c0_s = n * mean_switch_s if mean_switch_s is not None else None
    decode = {m: d for m, d in strategy.decode_step_s.items() if d > 0}
    quotas = aegaeon_quotas(tpot_slo_s, decode, c0_s) if c0_s and decode else {}
    m = result.metrics
    return {
        "strategy": strategy.name,  # the engine's; each model's own strategy never runs
        "models": paths,
        "weight_bytes": dict(engine.weight_bytes),
        "weight_budget_bytes": engine.weight_budget_bytes,
        "num_switches": len(switches),
        "mean_switch_s": mean_switch_s,
        "switch_s_by_model": {
            name: [s.load_s for s in switches if s.to_model == name] for name in engine.models
        },
        "c0_s": c0_s,  # the round's switch time: num_models x mean measured load
        "strategy_switch_s": strategy.switch_s,  # the strategy's EMA of the loads it was told
        "strategy_c0_s": strategy.c0_s(n),
        "decode_step_s": decode,  # the strategy's EMA of each model's decode step
        "quotas_s": quotas,  # aegaeon_quotas(tpot_slo_s, decode_step_s, c0_s)
        "num_rounds": strategy.num_rounds,
        **{
            k: m.get(k)
            for k in ("p50_ttft_s", "p50_tpot_s", "slo_attainment", "num_completed", "duration_s")
        },
    }
