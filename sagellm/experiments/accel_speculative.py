"""Speculative decoding vs plain decoding on GSM8K prompts, per drafter, batch 1 and batched
(``results/accel_speculative/<run_id>/``).

Prompts: the first ``num_prompts`` GSM8K test questions (``sagellm.accel.eval_data``),
chat-templated for SmolLM2. The ``ci`` preset runs a tiny random checkpoint without a
tokenizer: its prompts are the questions' characters mapped to token ids (``ord(c) % vocab``)
— plumbing in seconds, its acceptance numbers mean nothing.

For each batch size (1: one request at a time; ``batch``: that many at once) the plain engine
and one engine per drafter (``draft_model+int4``: the target's full-depth int4 copy drafts,
``accel.speculative_draft_quantization``) run the same greedy requests in this process, one
after another, after one untimed warm-up request each. Per (drafter, batch): output tokens/s
(output tokens / wall seconds of the run), mean TPOT (per request ``(finished - first token) /
(tokens - 1)``), drafted / accepted tokens, acceptance rate overall and per draft position, mean
accepted length (tokens emitted per verification), ``speedup`` (tokens/s over plain's in the
same run) and ``outputs_equal`` (greedy speculative output == plain, token for token).

Run: ``python -m sagellm.experiments.accel_speculative --preset ci`` (or ``full``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sagellm.accel.eval_data import gsm8k_problems
from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.core.config import DEFAULT_MODEL, AccelConfig, EngineConfig, ModelConfig
from sagellm.core.types import Request, SamplingParams
from sagellm.experiments.prefix_reuse import ExperimentRun

PRESETS: dict[str, dict] = {
    "ci": dict(
        model="tiny-random",  # plumbing: seconds
        num_prompts=3,
        output_tokens=12,
        batch=3,
        speculative_tokens=3,
        drafters=("ngram", "layer_skip", "draft_model"),
        num_kv_blocks=256,
    ),
    "full": dict(
        model=DEFAULT_MODEL,  # SmolLM2-135M: minutes on 2 cores
        num_prompts=16,
        output_tokens=96,
        batch=8,
        speculative_tokens=4,
        drafters=("ngram", "layer_skip", "draft_model", "draft_model+int8", "draft_model+int4"),
        num_kv_blocks=1024,
    ),
}


def gsm8k_prompt_ids(engine, num_prompts: int) -> list[list[int]]:
    """Token ids of the first GSM8K questions (chat template), or their characters mod the
    vocabulary for a checkpoint without a tokenizer."""
    questions = [p.question for p in gsm8k_problems(num_prompts)]
    if engine.tokenizer is None:
        V = engine.arch.vocab_size
        return [[ord(c) % V for c in q] for q in questions]
    return [engine.encode(q) for q in questions]


def _engine(model: str, p: dict, drafter: str | None):
    from sagellm.engines.native import NativeEngine

    accel = AccelConfig()
    if drafter is not None:  # "method" or "draft_model+<quant>": the target's quantized copy
        method, _, quant = drafter.partition("+")
        accel = AccelConfig(
            speculative_tokens=p["speculative_tokens"],
            speculative_method=method,
            speculative_draft_quantization=quant or None,
        )
    return NativeEngine(
        EngineConfig(
            model=ModelConfig(path=model),
            num_kv_blocks=p["num_kv_blocks"],
            block_size_tokens=16,
            max_num_seqs=max(p["batch"], 1),
            accel=accel,
        )
    )


def _timed(engine, prompts: list[list[int]], batch: int, out_tokens: int, tag: str) -> dict:
    """Run ``prompts`` in groups of ``batch`` (all of a group at once); metrics of the run."""
    sp = SamplingParams(max_tokens=out_tokens, ignore_eos=True)
    engine.generate([prompts[0][:8]], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    engine.reset_metrics()
    engine.spec_stats.reset()
    ids: list[str] = []
    t0 = time.perf_counter()
    for g in range(0, len(prompts), batch):
        group = [(f"{tag}-{i}", prompts[i]) for i in range(g, min(g + batch, len(prompts)))]
        for rid, pr in group:
            engine.add_request(Request(rid, pr, sp))
            ids.append(rid)
        while engine.has_unfinished():
            engine.step()
    wall = time.perf_counter() - t0
    ms = {m.request_id: m for m in engine.request_metrics()}
    tpots = [
        (ms[r].finished_s - ms[r].first_token_s) / (ms[r].num_output_tokens - 1)
        for r in ids
        if ms[r].num_output_tokens > 1
    ]
    n_out = sum(ms[r].num_output_tokens for r in ids)
    out = {
        "output_tokens": float(n_out),
        "wall_s": wall,
        "tokens_per_s": n_out / wall,
        "tpot_mean_s": sum(tpots) / len(tpots) if tpots else float("nan"),
        "num_steps": float(len(engine.step_metrics())),
        "outputs": [tuple(engine.output_token_ids(r)) for r in ids],
    }
    if engine.drafter is not None:
        out.update(engine.spec_stats.as_dict(prefix=""))
    return out


def run_speculative_bench(
    preset: str = "ci", results_root: str | Path = "results", **overrides
) -> ExperimentRun:
    """Plain vs speculative decoding per drafter and batch size (see the module docstring);
    write and return the run."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    model = resolve_experiment_model(str(p["model"]))
    rows = []
    metrics: dict[str, float] = {"schema_version": float(SCHEMA_VERSION)}
    engines = {d: _engine(model, p, d) for d in (None, *p["drafters"])}
    prompts = gsm8k_prompt_ids(engines[None], p["num_prompts"])
    metrics["num_prompts"] = float(len(prompts))
    metrics["mean_prompt_tokens"] = sum(map(len, prompts)) / len(prompts)
    for batch in sorted({1, p["batch"]}):
        base = _timed(engines[None], prompts, batch, p["output_tokens"], f"plain-b{batch}")
        rows.append({"drafter": "plain", "batch": batch, **base})
        for d in p["drafters"]:
            r = _timed(engines[d], prompts, batch, p["output_tokens"], f"{d}-b{batch}")
            r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
            r["outputs_equal"] = float(r["outputs"] == base["outputs"])
            rows.append({"drafter": d, "batch": batch, **r})
            for k, v in r.items():
                if k != "outputs":
                    metrics[f"{d}_b{batch}_{k}"] = float(v)
        metrics[f"plain_b{batch}_tokens_per_s"] = base["tokens_per_s"]
        metrics[f"plain_b{batch}_tpot_mean_s"] = base["tpot_mean_s"]
    for e in engines.values():
        e.close()
    table = pd.DataFrame([{k: v for k, v in r.items() if k != "outputs"} for r in rows])
    run_dir = write_experiment(
        results_root,
        "accel_speculative",
        {"preset": preset, **{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}},
        metrics,
        {"speculative": table},
    )
    return ExperimentRun(run_dir, metrics, {"speculative": table})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ci", choices=sorted(PRESETS))
    ap.add_argument("--results", default="results")
    ap.add_argument("--num-prompts", type=int)
    ap.add_argument("--output-tokens", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--speculative-tokens", type=int)
    args = ap.parse_args(argv)
    over = {
        k: v
        for k, v in {
            "num_prompts": args.num_prompts,
            "output_tokens": args.output_tokens,
            "batch": args.batch,
            "speculative_tokens": args.speculative_tokens,
        }.items()
        if v is not None
    }
    run = run_speculative_bench(args.preset, args.results, **over)
    cols = ["drafter", "batch", "tokens_per_s", "tpot_mean_s", "speedup", "outputs_equal"]
    extra = ["acceptance_rate", "mean_accepted_length"]
    table = run.tables["speculative"]
    print(table[[c for c in cols + extra if c in table]].to_string(index=False))
    print(f"run folder: {run.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
