"""Sparse attention (StreamingLLM, Quest) vs dense on one loaded model, in one run, written to
``results/accel_sparse/<run_id>/``.

(1) Accuracy, decode-style: for each context length L, the fixed slice of tinyshakespeare.txt
(its first ``text_chars`` characters, tokenized without a chat template; tokens ``[0, L)`` are
the context, the next ``scored_tokens`` are teacher-forced decode steps) gives dense and sparse
logits of the same positions: perplexity of each on the scored tokens, max |logit error|,
KL(dense || sparse), top-1 agreement. (2) Speed and memory: a greedy request with an L-token
prompt decodes ``decode_tokens`` tokens; per method the median decode step time (engine
``compute_s``), the prefill time, and the peak KV blocks the request held (+ Quest's summary
bytes). Dense and sparse alternate on the same engine (``set_sparse_attention``), so weights,
threads and the machine state are shared. Files: ``config.json``, ``metrics.json``,
``accuracy.parquet``, ``speed.parquet``.

    python -m sagellm.experiments.accel_sparse --preset ci|full [--results results]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sagellm.accel.eval_data import shakespeare_text
from sagellm.accel.sparse import compare_logits
from sagellm.benchmarks.results import SCHEMA_VERSION, write_experiment
from sagellm.core.config import DEFAULT_MODEL, AccelConfig
from sagellm.core.types import Request, SamplingParams

PRESETS: dict[str, dict] = {
    "ci": dict(
        model=DEFAULT_MODEL,
        text_chars=4000,
        context_lengths=[128, 256],
        scored_tokens=8,
        decode_tokens=4,
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
        decode_tokens=32,
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


def decode_speed(engine, prompt: list[int], decode_tokens: int, tag: str) -> dict[str, float]:
    """One greedy request: prefill seconds, median decode-step seconds, peak KV blocks held
    (over the whole request, which includes a prefill chunk's blocks, and over decode steps)."""
    engine.reset_metrics()
    sp = SamplingParams(max_tokens=decode_tokens, ignore_eos=True)
    engine.add_request(Request(tag, prompt, sp))
    peak = peak_decode = 0
    t0 = time.perf_counter()
    while engine.has_unfinished():
        engine.step()
        used = engine.kv.num_referenced_blocks  # 0 once the request finished
        peak = max(peak, used)
        if engine.step_metrics()[-1].num_prefill_tokens == 0:
            peak_decode = max(peak_decode, used)
    wall = time.perf_counter() - t0
    steps = engine.step_metrics()
    decode = [s.compute_s for s in steps if s.num_prefill_tokens == 0]
    return {
        "prefill_s": sum(s.compute_s for s in steps if s.num_prefill_tokens > 0),
        "decode_step_s": statistics.median(decode) if decode else float("nan"),
        "request_s": wall,
        "peak_kv_blocks": float(peak),
        "decode_kv_blocks": float(peak_decode),
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
    longest = lengths[-1] + max(p["scored_tokens"], p["decode_tokens"]) + 1
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
    acc_rows, speed_rows, dense_logits = [], [], {}
    for name, accel in methods(p).items():
        eng.set_sparse_attention(accel)
        for L in lengths:
            targets = tokens[L : L + p["scored_tokens"]]
            logits = eng.decode_logits(tokens[:L], targets)
            if name == "dense":
                dense_logits[L] = logits
            t = torch.tensor(targets, dtype=torch.int64)
            acc = compare_logits(dense_logits[L], logits, t, L)
            acc_rows.append({"method": name, **asdict(acc)})
            row = decode_speed(eng, tokens[:L], p["decode_tokens"], f"{name}-{L}")
            row["peak_kv_bytes"] = row["peak_kv_blocks"] * block_bytes
            row["decode_kv_bytes"] = row["decode_kv_blocks"] * block_bytes
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
    cols = ["method", "context_tokens", "prefill_s", "decode_step_s", "peak_kv_blocks"]
    cols += ["decode_kv_blocks"]
    print(run.tables["speed"][cols].to_string(index=False))
    print(run.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
