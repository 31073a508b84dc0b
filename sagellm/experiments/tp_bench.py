"""Comm share of step time under tensor parallelism, with and without fusion and overlap, all
variants in one run (``results/tp_bench/<run_id>/``: ``config.json``, ``metrics.json``,
``variants.parquet``).

Variants (one engine each, same requests, greedy, ``num_threads`` per rank):

- ``tp1``: one process (comm share 0 by construction; the reference step time);
- ``tp2_fused``: the plan's all-reduce buckets give one collective per layer-part and forward
  (``tp_fuse_all_reduce``);
- ``tp2_unfused``: one collective per request, layer and part (the unbucketed plan);
- ``tp2_unfused_overlap``: the same collectives, each async behind the next request's GEMM
  (``tp_overlap_all_reduce``; overlap needs more than one collective per layer-part, so it has
  no fused counterpart).

Per variant: step time (schedule + compute + sample, s), comm seconds (rank 0's view, summed
``StepMetrics.comm_s``: collective seconds not hidden behind compute), comm share = comm /
step time (the gate's definition), the seconds overlap hid, output tok/s, and whether greedy
tokens equal tp1's. On a machine with fewer cores than ranks x
threads the numbers are contended; the comparison within one run is the result.

Run: ``python -m sagellm.experiments.tp_bench --preset ci`` (tiny random model, seconds) or
``--preset full`` (SmolLM2-135M).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sagellm.benchmarks.metrics import compute_metrics
from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.core import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.experiments.prefix_reuse import ExperimentRun

PRESETS: dict[str, dict] = {
    "ci": {
        "model": "tiny-random",
        "num_requests": 4,
        "prompt_tokens": 32,
        "max_tokens": 8,
        "num_threads": 1,
        "num_kv_blocks": 64,
        "seed": 0,
    },
    "full": {
        "model": "smollm2-135m-instruct",
        "num_requests": 16,
        "prompt_tokens": 128,
        "max_tokens": 32,
        "num_threads": 1,
        "num_kv_blocks": 512,
        "seed": 0,
    },
}

_OFF = {"tp_fuse_all_reduce": False, "tp_overlap_all_reduce": False}
VARIANTS: dict[str, dict] = {
    "tp1": {"tp_size": 1, **_OFF},
    "tp2_fused": {"tp_size": 2, **_OFF, "tp_fuse_all_reduce": True},
    "tp2_unfused": {"tp_size": 2, **_OFF},
    "tp2_unfused_overlap": {"tp_size": 2, **_OFF, "tp_overlap_all_reduce": True},
}


def _run_variant(model: str, p: dict, overrides: dict, prompts: list[list[int]]) -> dict:
    engine = NativeEngine.from_pretrained(
        model, num_kv_blocks=p["num_kv_blocks"], num_threads=p["num_threads"], **overrides
    )
    try:
        sp = SamplingParams(max_tokens=p["max_tokens"], ignore_eos=True)
        engine.generate(prompts[:1], SamplingParams(max_tokens=2, ignore_eos=True))  # warm-up
        engine.reset_metrics()
        calls0 = engine.tp.stats.num_calls if engine.tp is not None else 0
        hidden0 = engine.tp.row_parallel.hidden_s if engine.tp is not None else 0.0
        t0 = time.perf_counter()
        for i, ids in enumerate(prompts):
            engine.add_request(Request(f"r{i}", ids, sp))
        while engine.has_unfinished():
            engine.step()
        wall_s = time.perf_counter() - t0
        steps = engine.step_metrics()
        m = compute_metrics(engine.request_metrics(), steps)
        outputs = [engine.output_token_ids(f"r{i}") for i in range(len(prompts))]
        comm_s = sum(s.comm_s for s in steps)
        num_calls = engine.tp.stats.num_calls - calls0 if engine.tp is not None else 0
        hidden_s = engine.tp.row_parallel.hidden_s - hidden0 if engine.tp is not None else 0.0
    finally:
        engine.close()
    return {
        "wall_s": wall_s,
        "step_time_s": m["step_time_s"],
        "comm_s": comm_s,
        "comm_share": m["comm_share"],
        "output_throughput_tok_per_s": m["output_throughput_tok_per_s"],
        "num_steps": float(len(steps)),
        "num_collectives": float(num_calls),
        "overlap_hidden_s": hidden_s,
        "outputs": outputs,
    }


def run_tp_bench(
    preset: str = "ci", results_root: str | Path = "results", **overrides
) -> ExperimentRun:
    """Run every variant (see the module docstring); write and return the run."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    model = resolve_experiment_model(p["model"])
    probe = NativeEngine.from_pretrained(model, num_kv_blocks=4)
    vocab = probe.vocab_size
    probe.close()
    g = torch.Generator().manual_seed(p["seed"])
    prompts = [
        torch.randint(0, vocab, (p["prompt_tokens"],), generator=g).tolist()
        for _ in range(p["num_requests"])
    ]
    rows, ref = [], None
    metrics: dict[str, float] = {"schema_version": float(SCHEMA_VERSION)}
    for name, cfg in VARIANTS.items():
        r = _run_variant(model, p, cfg, prompts)
        outputs = r.pop("outputs")
        ref = outputs if ref is None else ref
        r["same_tokens_as_tp1"] = float(outputs == ref)
        rows.append({"variant": name, **cfg, **r})
        for k in ("comm_share", "comm_s", "step_time_s", "num_collectives", "same_tokens_as_tp1"):
            metrics[f"{name}_{k}"] = float(r[k] or 0.0)
    table = pd.DataFrame(rows)
    run_dir = write_experiment(
        results_root, "tp_bench", {"preset": preset, **p}, metrics, {"variants": table}
    )
    return ExperimentRun(run_dir, metrics, {"variants": table})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ci")
    ap.add_argument("--results-root", default="results")
    args = ap.parse_args(argv)
    run = run_tp_bench(args.preset, args.results_root)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(run.tables["variants"].to_string(index=False))
    print(f"run folder: {run.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
