"""Sparse attention (StreamingLLM, Quest) vs dense on one loaded model, in one run, written to
``results/accel_sparse/<run_id>/``.

(1) Accuracy, decode-style: for each context length L, the fixed slice of tinyshakespeare.txt
(its first ``text_chars`` characters, tokenized without a chat template; tokens ``[0, L)`` are
the context, the next ``scored_tokens`` are teacher-forced decode steps) gives dense and sparse
logits of the same positions: perplexity of each on the scored tokens, max |logit error|,
KL(dense || sparse), top-1 agreement. (2) Speed and memory of those same requests, from the
engine's step metrics: prefill time, median decode step time (``compute_s``), decode tokens/s,
KV blocks held after each step (peak; and during decode) plus Quest's summary bytes. Dense and
sparse alternate per context length on the same engine (``set_sparse_attention``), so weights,
threads and the machine state are shared. Files: ``config.json``, ``metrics.json``,
``accuracy.parquet``, ``speed.parquet``.

    python -m sagellm.experiments.accel_sparse --preset ci|full [--results results]
"""

from __future__ import annotations

import argparse
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sagellm.accel.eval_data import shakespeare_text
from sagellm.accel.sparse import compare_logits
from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.core.config import DEFAULT_MODEL, AccelConfig

PRESETS: dict[str, dict] = {
    "ci": dict(
        model=DEFAULT_MODEL,
        text_chars=4000,
        context_lengths=[128, 256],
        scored_tokens=8,
        sink_tokens=4,
        window_tokens=64,
        quest_top_k_blocks=4,
        block_size_tokens=16,
        num_threads=None,  # torch threads; None = torch's default
    ),
    "full": dict(
        model=DEFAULT_MODEL,
        text_chars=40_000,
        context_lengths=[512, 1024, 2048, 4096],
        scored_tokens=64,
        sink_tokens=4,
        window_tokens=256,  # the same attended-token budget as Quest's 16 blocks of 16
        quest_top_k_blocks=16,
        block_size_tokens=16,
        num_threads=None,
    ),
}


@dataclass
class ExperimentRun:
    run_dir: Path
    metrics: dict[str, float]
    tables: dict  # name -> pandas.DataFrame


def methods(p: dict) -> dict[str, AccelConfig]:
    """The compared attention configurations, dense first."""
    return {
        "dense": AccelConfig(),
        "streaming": AccelConfig(
            enable_sparsity=True,
            sparsity_method="streaming",
            sink_tokens=p["sink_tokens"],
            window_tokens=p["window_tokens"],
        ),
        "quest": AccelConfig(
            enable_sparsity=True,
            sparsity_method="quest",
            quest_top_k_blocks=p["quest_top_k_blocks"],
        ),
    }


def step_speed(steps, block_bytes: int) -> dict[str, float]:
    """Speed and KV use of one request from its engine steps: prefill seconds, median decode
    step seconds, KV blocks held after each step (peak over all steps and over decode steps;
    within a step a prefill chunk's blocks are held until streaming frees the dead ones)."""
    decode = [s for s in steps if s.num_prefill_tokens == 0]
    peak = max(s.kv_blocks_used for s in steps)
    peak_decode = max((s.kv_blocks_used for s in decode), default=0)
    return {
        "prefill_s": sum(s.compute_s for s in steps if s.num_prefill_tokens > 0),
        "decode_step_s": statistics.median(s.compute_s for s in decode) if decode else math.nan,
        "decode_tokens_per_s": len(decode) / sum(s.compute_s for s in decode) if decode else 0.0,
        "peak_kv_blocks": float(peak),
        "decode_kv_blocks": float(peak_decode),
        "peak_kv_bytes": float(peak * block_bytes),
        "decode_kv_bytes": float(peak_decode * block_bytes),
    }


def run_accel_sparse_experiment(
    preset: str = "full", results_root: str | Path = "results", **overrides: object
) -> ExperimentRun:
    """Accuracy and speed of every method at every context length (see the module docstring)."""
    import pandas as pd

    from sagellm.engines.native import NativeEngine

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    lengths = sorted(p["context_lengths"])
    longest = lengths[-1] + p["scored_tokens"] + 1
    bs = p["block_size_tokens"]
    eng = NativeEngine.from_pretrained(
        p["model"],
        block_size_tokens=bs,
        num_kv_blocks=-(-longest // bs) + 4,
        num_threads=p["num_threads"],
    )
    tokens = eng.tokenizer.encode(shakespeare_text()[: p["text_chars"]])
    if len(tokens) < longest:
        raise ValueError(f"text_chars={p['text_chars']} gives {len(tokens)} tokens < {longest}")
    block_bytes = bs * eng.arch.kv_bytes_per_token(eng.dtype)
    acc_rows, speed_rows = [], []
    for L in lengths:  # methods alternate per length: drifting machine load hits all alike
        targets = tokens[L : L + p["scored_tokens"]]
        t = torch.tensor(targets, dtype=torch.int64)
        dense = None
        for name, accel in methods(p).items():
            eng.set_sparse_attention(accel)
            eng.reset_metrics()
            logits = eng.decode_logits(tokens[:L], targets)
            dense = logits if dense is None else dense
            acc_rows.append({"method": name, **asdict(compare_logits(dense, logits, t, L))})
            row = step_speed(eng.step_metrics(), block_bytes)
            extra = eng.sparse.stats().get("quest_summary_bytes", 0.0) if eng.sparse else 0.0
            speed_rows.append({"method": name, "context_tokens": L, **row, "summary_bytes": extra})
    eng.close()
    accuracy, speed = pd.DataFrame(acc_rows), pd.DataFrame(speed_rows)
    metrics: dict[str, float] = {"schema_version": float(SCHEMA_VERSION)}
    for r in acc_rows:
        k = f"{r['method']}_{r['context_tokens']}"
        metrics[f"{k}_perplexity"] = r["sparse_perplexity"]
        metrics[f"{k}_max_abs_logit_error"] = r["max_abs_logit_error"]
        metrics[f"{k}_mean_kl_nats"] = r["mean_kl_nats"]
    for r in speed_rows:
        k = f"{r['method']}_{r['context_tokens']}"
        metrics[f"{k}_decode_step_s"] = r["decode_step_s"]
        metrics[f"{k}_peak_kv_bytes"] = r["peak_kv_bytes"]
        metrics[f"{k}_decode_kv_bytes"] = r["decode_kv_bytes"]
    params = {"preset": preset, **p, "num_text_tokens": len(tokens)}
    run_dir = write_experiment(
        results_root, "accel_sparse", params, metrics, {"accuracy": accuracy, "speed": speed}
    )
    return ExperimentRun(run_dir, metrics, {"accuracy": accuracy, "speed": speed})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ci")
    ap.add_argument("--results", default="results", help="results root folder")
    ap.add_argument("--num-threads", type=int, default=None, help="torch intra-op threads")
    args = ap.parse_args(argv)
    run = run_accel_sparse_experiment(args.preset, args.results, num_threads=args.num_threads)
    cols = ["method", "context_tokens", "sparse_perplexity", "max_abs_logit_error"]
    cols += ["mean_kl_nats", "top1_agreement"]
    print(run.tables["accuracy"][cols].to_string(index=False))
    cols = ["method", "context_tokens", "prefill_s", "decode_step_s", "decode_tokens_per_s"]
    cols += ["peak_kv_blocks", "decode_kv_blocks"]
    print(run.tables["speed"][cols].to_string(index=False))
    print(run.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
