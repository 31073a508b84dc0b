"""Prefill/decode disaggregation vs colocated serving under a Poisson load where prefill
interference shows (DistServe, OSDI'24; Splitwise, ISCA'24): long prompts arrive while short
requests decode. Colocated, a long prompt's prefill shares a step (and the cores) with every
running decode, so those decodes stall for it (TPOT tail); disaggregated, the decode process
keeps stepping while the prefill process computes, and each request's KV moves between them
over the KV connector (``shm``; ``transport="tcp"`` selectable).

Fairness: the same cores both ways. PD runs a prefill process and a decode process with
``threads_per_side`` torch threads each (1 + 1 = 2 cores by default); colocated runs one
engine with ``2 * threads_per_side`` threads (``colocated_num_threads`` overrides: on a
machine other processes share, a 2-thread OpenMP team can stall at every barrier while one of
its threads waits for a core, which is not prefill interference; check with 1 thread). Same
checkpoint, engine config, workload (same seed, so the same prompts and arrival times) and
``BenchmarkRunner`` in ``arrival`` mode. The PD front's own process only waits on pipes.

Timestamps: ``time.perf_counter()`` in every process (CLOCK_MONOTONIC on Linux, system-wide).
TTFT = first token - scheduled arrival; TPOT = (finished - first token) / (tokens - 1).

Writes ``results/pd_bench/<run_id>/``: ``requests.parquet`` (one row per request and mode),
``summary.parquet`` (p50/p95 TTFT and TPOT per mode, all requests and short ones) and
``metrics.json``. Run: ``python -m sagellm.experiments.pd_bench --preset full`` (``ci``:
seconds on a tiny random model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.device import peak_flops
from sagellm.benchmarks.metrics import percentile, request_latencies
from sagellm.benchmarks.random_model import random_checkpoint
from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.runner import BenchmarkRunner
from sagellm.benchmarks.tiny_model import TINY_RANDOM
from sagellm.benchmarks.workloads import WorkloadConfig, WorkloadRequest
from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.engines.native import NativeEngine
from sagellm.engines.pd import PDCluster, PDClusterConfig
from sagellm.experiments.prefix_reuse import ExperimentRun

PRESETS: dict[str, dict] = {
    "ci": {
        "model": "tiny-random",
        "dtype": "float32",
        "num_requests": 12,
        "request_rate_per_s": 20.0,
        "long_fraction": 0.25,
        "long_prompt_tokens": 192,
        "long_output_tokens": 4,
        "short_prompt_tokens": 16,
        "short_output_tokens": 24,
        "block_size_tokens": 16,
        "num_kv_blocks": 256,
        "threads_per_side": 1,
        "colocated_num_threads": None,  # None = 2 * threads_per_side (the same cores)
        "transport": "shm",
        "warmup_requests": 1,
        "seed": 0,
    },
    "full": {
        "model": "smollm2-135m-instruct",
        "dtype": "float32",
        "num_requests": 80,
        "request_rate_per_s": 0.6,
        "long_fraction": 0.25,
        "long_prompt_tokens": 768,
        "long_output_tokens": 8,
        "short_prompt_tokens": 32,
        "short_output_tokens": 96,
        "block_size_tokens": 16,
        "num_kv_blocks": 1024,
        "threads_per_side": 1,
        "colocated_num_threads": None,  # None = 2 * threads_per_side (the same cores)
        "transport": "shm",
        "warmup_requests": 2,
        "seed": 0,
    },
}


def interference_workload(p: dict):
    """A ``BenchmarkRunner`` workload builder: Poisson arrivals at ``request_rate_per_s``; each
    request is long (``long_prompt_tokens`` in, ``long_output_tokens`` out) with probability
    ``long_fraction``, else short (``short_*``); group "long" / "short". Deterministic in the
    workload seed."""

    def build(wl: WorkloadConfig, vocab_size: int) -> list[WorkloadRequest]:
        rng = np.random.default_rng(wl.seed)
        gaps_s = rng.exponential(1.0 / p["request_rate_per_s"], p["num_requests"])
        t_s, reqs = 0.0, []
        for i, gap_s in enumerate(gaps_s):
            t_s += float(gap_s)
            kind = "long" if rng.random() < p["long_fraction"] else "short"
            n_in, n_out = p[f"{kind}_prompt_tokens"], p[f"{kind}_output_tokens"]
            prompt = rng.integers(0, vocab_size, n_in).tolist()
            reqs.append(WorkloadRequest(f"q{i}", t_s, prompt, n_out, group=kind))
        return reqs

    return build


def _serve(engine, p: dict, mode: str, bench: BenchmarkConfig, peak: float) -> list[dict]:
    build = interference_workload(p)
    reqs = build(bench.workload, engine.vocab_size)
    kind = {f"r0-{r.request_id}": r.group for r in reqs}
    runner = BenchmarkRunner(engine, progress=False, build=build)
    result = runner.run(bench, results_root=None, peak_flops_per_s=peak)
    rows = []
    for m in result.repeats[0].requests:
        ttft, tpot, _ = request_latencies(m)
        rows.append({
            "mode": mode, "request_id": m.request_id, "kind": kind.get(m.request_id),
            "num_prompt_tokens": m.num_prompt_tokens, "num_output_tokens": m.num_output_tokens,
            "ttft_s": ttft, "tpot_s": tpot, "finish_reason": m.finish_reason,
        })  # fmt: skip
    return rows


def _summary(rows: list[dict]) -> tuple[list[dict], dict[str, float | None]]:
    out, metrics = [], {}
    for mode in ("colocated", "pd"):
        for subset in ("all", "short"):
            sel = [r for r in rows if r["mode"] == mode and subset in ("all", r["kind"])]
            row = {"mode": mode, "requests": subset, "num_requests": len(sel)}
            for key in ("ttft_s", "tpot_s"):
                xs = [r[key] for r in sel if r[key] is not None]
                for q in (50, 95):
                    row[f"p{q}_{key}"] = percentile(xs, q)
                    metrics[f"{mode}_{subset}_p{q}_{key}"] = row[f"p{q}_{key}"]
            out.append(row)
    for q in (50, 95):
        for key in ("ttft_s", "tpot_s"):
            a, b = metrics[f"colocated_all_p{q}_{key}"], metrics[f"pd_all_p{q}_{key}"]
            metrics[f"p{q}_{key}_colocated_over_pd"] = a / b if a and b else None
    return out, metrics


def _model_path(model: str) -> str:
    """``tiny-random``: the tiny random checkpoint, written once under the cache; else as is."""
    if model != TINY_RANDOM:
        return model
    from sagellm.engines.native.tokenizer import cache_dir

    root = cache_dir() / "random_models"
    return str(random_checkpoint(root, hidden_size=64, num_layers=2, vocab_size=512,
                                 intermediate_size=128))  # fmt: skip


def run_pd_bench(
    preset: str = "ci", results_root: str | Path = "results", **overrides
) -> ExperimentRun:
    """Run both modes on the same workload (see the module docstring); write and return it."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    engine_cfg = EngineConfig(
        model=ModelConfig(path=_model_path(p["model"]), dtype=p["dtype"]),
        block_size_tokens=p["block_size_tokens"],
        num_kv_blocks=p["num_kv_blocks"],
        enable_prefix_caching=True,
    )
    bench = BenchmarkConfig(
        experiment="pd_bench", engine=engine_cfg, mode="arrival",
        warmup_requests=p["warmup_requests"], workload=WorkloadConfig(seed=p["seed"]),
    )  # fmt: skip
    threads = p["threads_per_side"]
    peak = peak_flops("cpu", p["dtype"])  # cached; one value for both modes (MFU columns)
    co_threads = p["colocated_num_threads"] or 2 * threads
    colocated = NativeEngine(engine_cfg.model_copy(update={"num_threads": co_threads}))
    rows = _serve(colocated, p, "colocated", bench, peak)
    colocated.close()
    del colocated
    pd_cfg = PDClusterConfig(
        engine_cfg, transport=p["transport"], prefill_num_threads=threads,
        decode_num_threads=threads,
    )  # fmt: skip
    with PDCluster(pd_cfg) as cluster:
        rows += _serve(cluster, p, "pd", bench, peak)
    summary, metrics = _summary(rows)
    metrics = {"schema_version": float(SCHEMA_VERSION), **metrics}
    tables = {"requests": pd.DataFrame(rows), "summary": pd.DataFrame(summary)}
    run_dir = write_experiment(results_root, "pd_bench", {"preset": preset, **p}, metrics, tables)
    return ExperimentRun(run_dir, metrics, tables)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ci")
    ap.add_argument("--transport", choices=["shm", "tcp"], default=None)
    ap.add_argument(
        "--colocated-threads",
        type=int,
        default=None,
        help="threads of the colocated engine (default: 2 x threads per PD side)",
    )
    ap.add_argument("--results-root", default="results")
    args = ap.parse_args(argv)
    extra = {"transport": args.transport} if args.transport else {}
    if args.colocated_threads:
        extra["colocated_num_threads"] = args.colocated_threads
    run = run_pd_bench(args.preset, args.results_root, **extra)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(run.tables["summary"].to_string(index=False))
    print(f"run folder: {run.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
