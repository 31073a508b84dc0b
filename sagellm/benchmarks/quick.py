"""``sagellm bench``: a minimal offline throughput benchmark, optionally beside HF transformers.

Every request has ``prompt_tokens`` random token ids (seeded) and generates exactly
``output_tokens`` tokens (EOS ignored), all submitted at once. Output tokens/s is
total output tokens / wall seconds of the timed run (after a short warm-up).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from sagellm.core.config import DEFAULT_MODEL, EngineConfig, ModelConfig
from sagellm.core.types import SamplingParams

PRESETS: dict[str, dict[str, int]] = {
    "w1": {"num_requests": 64, "prompt_tokens": 256, "output_tokens": 128},
    "tiny": {"num_requests": 4, "prompt_tokens": 32, "output_tokens": 8},
}


@dataclass(frozen=True)
class QuickBenchResult:
    model: str
    dtype: str
    num_requests: int
    prompt_tokens: int
    output_tokens: int
    num_threads: int
    native_wall_s: float
    native_output_tok_per_s: float
    native_mean_ttft_s: float
    hf_wall_s: float | None = None
    hf_output_tok_per_s: float | None = None
    speedup_vs_hf: float | None = None
    hf_token_agreement: float | None = None  # fraction of output tokens equal to HF's


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n, length), generator=g).tolist()


def run_quick_bench(
    preset: str = "w1",
    model: str = DEFAULT_MODEL,
    dtype: str = "float32",
    compare_hf: bool = False,
    num_threads: int | None = None,
    seed: int = 0,
    **overrides: int,
) -> QuickBenchResult:
    from sagellm.engines.native import NativeEngine

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
    shape = {**PRESETS[preset], **overrides}
    n, lp, lo = shape["num_requests"], shape["prompt_tokens"], shape["output_tokens"]
    cfg = EngineConfig(
        model=ModelConfig(path=model, dtype=dtype),
        num_threads=num_threads,
        max_num_seqs=max(n, 1),
        kv_cache_bytes=4 * 1024**3,
    )
    engine = NativeEngine(cfg)
    prompts = random_prompts(n, lp, min(engine.arch.vocab_size, 32000), seed)
    sp = SamplingParams(max_tokens=lo, ignore_eos=True)
    engine.generate(prompts[:2], SamplingParams(max_tokens=4, ignore_eos=True))  # warm-up
    engine.reset_metrics()
    t0 = time.perf_counter()
    native_out = engine.generate(prompts, sp)
    wall = time.perf_counter() - t0
    ttfts = [m.first_token_s - m.arrival_s for m in engine.request_metrics() if m.first_token_s]
    res = dict(
        model=model,
        dtype=dtype,
        num_requests=n,
        prompt_tokens=lp,
        output_tokens=lo,
        num_threads=torch.get_num_threads(),
        native_wall_s=wall,
        native_output_tok_per_s=n * lo / wall,
        native_mean_ttft_s=sum(ttfts) / max(len(ttfts), 1),
    )
    del engine
    if compare_hf:
        from sagellm.benchmarks.hf_reference import hf_batched_generate, load_hf_model

        hf = load_hf_model(model, dtype)
        hf_batched_generate(hf, prompts[:2], 4)  # warm-up
        t0 = time.perf_counter()
        hf_out = hf_batched_generate(hf, prompts, lo)
        hf_wall = time.perf_counter() - t0
        same = sum(
            a == b
            for x, y in zip(native_out, hf_out, strict=True)
            for a, b in zip(x, y, strict=False)
        )
        res.update(
            hf_wall_s=hf_wall,
            hf_output_tok_per_s=n * lo / hf_wall,
            speedup_vs_hf=hf_wall / wall,
            hf_token_agreement=same / (n * lo),
        )
    return QuickBenchResult(**res)


def format_result(r: QuickBenchResult) -> str:
    lines = [
        f"{k:>26}: {v:.4g}" if isinstance(v, float) else f"{k:>26}: {v}"
        for k, v in asdict(r).items()
        if v is not None
    ]
    return "\n".join(lines)
