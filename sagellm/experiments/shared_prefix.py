"""Shared-prefix workload: TTFT and total time with prefix reuse on vs off, in one process.

Every request is ``shared prefix + unique tail``. Before timing, one request carrying the
prefix runs to completion on each engine (the "system prompt" is in cache for the reuse
engine; the other engine gets the same warm-up work). Then all requests arrive at once.

The ideal TTFT reduction equals the hit fraction (reused prompt tokens / prompt tokens) if
prefill time were linear in tokens; ``fraction_of_ideal = measured reduction / ideal``.

Run: ``python -m sagellm.experiments.shared_prefix --requests 64 --prefix 1024 --unique 64``
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass

from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine


def shared_prefix_prompts(
    num_requests: int, prefix_tokens: int, unique_tokens: int, vocab_size: int, seed: int = 0
) -> tuple[list[int], list[list[int]]]:
    """(prefix, prompts): random token ids (ids >= 10 to stay clear of special tokens)."""
    rng = random.Random(seed)
    hi = max(11, vocab_size - 1)
    prefix = [rng.randrange(10, hi) for _ in range(prefix_tokens)]
    tails = [[rng.randrange(10, hi) for _ in range(unique_tokens)] for _ in range(num_requests)]
    return prefix, [prefix + t for t in tails]


@dataclass(frozen=True)
class WorkloadResult:
    """One timed run. Times in seconds from the moment all requests were added."""

    ttft_s: list[float]
    total_s: float
    num_requests: int
    num_completed: int
    prompt_tokens: int
    cached_tokens: int
    computed_prompt_tokens: int  # prefill tokens the engine actually ran
    outputs: list[list[int]]

    @property
    def ttft_p50_s(self) -> float:
        return statistics.median(self.ttft_s)

    @property
    def hit_fraction(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def run_workload(
    engine: NativeEngine,
    prompts: list[list[int]],
    output_tokens: int,
    warm_prompt: list[int] | None = None,
    tag: str = "w",
) -> WorkloadResult:
    """Warm up with ``warm_prompt`` (untimed), then run all ``prompts`` arriving together."""
    sp = SamplingParams(max_tokens=output_tokens, ignore_eos=True)
    if warm_prompt is not None:
        engine.generate([warm_prompt], SamplingParams(max_tokens=1, ignore_eos=True))
    engine.reset_metrics()
    ids = [f"{tag}-{i}" for i in range(len(prompts))]
    t0 = engine.clock()
    for rid, p in zip(ids, prompts, strict=True):
        engine.add_request(Request(rid, p, sp, arrival_s=t0))
    while engine.has_unfinished():
        engine.step()
    total = engine.clock() - t0
    ms = {m.request_id: m for m in engine.request_metrics()}
    done = [ms[r] for r in ids if ms[r].finished_s is not None]
    steps = engine.step_metrics()
    return WorkloadResult(
        ttft_s=[m.first_token_s - m.arrival_s for m in done],
        total_s=total,
        num_requests=len(ids),
        num_completed=len(done),
        prompt_tokens=sum(len(p) for p in prompts),
        cached_tokens=sum(ms[r].num_cached_tokens for r in ids),
        computed_prompt_tokens=sum(s.num_prefill_tokens for s in steps),
        outputs=[engine.output_token_ids(r) for r in ids],
    )


def compare(off: WorkloadResult, on: WorkloadResult) -> dict[str, float]:
    """Flat metrics of an off/on pair (unit-suffixed)."""
    reduction = 1.0 - on.ttft_p50_s / off.ttft_p50_s
    ideal = on.hit_fraction
    return {
        "num_requests": float(on.num_requests + off.num_requests),
        "num_completed": float(on.num_completed + off.num_completed),
        "ttft_p50_off_s": off.ttft_p50_s,
        "ttft_p50_on_s": on.ttft_p50_s,
        "total_off_s": off.total_s,
        "total_on_s": on.total_s,
        "token_hit_rate": on.hit_fraction,
        "ttft_reduction": reduction,
        "ideal_ttft_reduction": ideal,
        "fraction_of_ideal": reduction / ideal if ideal > 0 else 0.0,
        "total_speedup": off.total_s / on.total_s,
        "computed_prompt_tokens_off": float(off.computed_prompt_tokens),
        "computed_prompt_tokens_on": float(on.computed_prompt_tokens),
        "outputs_equal": float(off.outputs == on.outputs),
    }


def make_engines(model: str, **engine_kw) -> tuple[NativeEngine, NativeEngine]:
    """(reuse off, reuse on) engines of the same model and settings."""
    off = NativeEngine.from_pretrained(model, **engine_kw)
    on = NativeEngine.from_pretrained(model, enable_prefix_caching=True, **engine_kw)
    return off, on


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--prefix", type=int, default=1024)
    p.add_argument("--unique", type=int, default=64)
    p.add_argument("--output", type=int, default=8)
    p.add_argument("--max-batched-tokens", type=int, default=2048)
    args = p.parse_args(argv)
    off, on = make_engines(args.model, max_num_batched_tokens=args.max_batched_tokens)
    prefix, prompts = shared_prefix_prompts(
        args.requests, args.prefix, args.unique, off.arch.vocab_size
    )
    warm = [*prefix, 11]
    t = time.perf_counter()
    r_off = run_workload(off, prompts, args.output, warm, "off")
    r_on = run_workload(on, prompts, args.output, warm, "on")
    for k, v in compare(r_off, r_on).items():
        print(f"{k:28s} {v:.4f}")
    print(f"wall_s {time.perf_counter() - t:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
