"""Per-run summary metrics from request and step metrics (vLLM bench-serve definitions).

TTFT = first_token_s - arrival_s; TPOT = (e2e - ttft) / (output_tokens - 1) for requests with
more than one output token; E2EL = finished_s - arrival_s. Units in every key.
"""

from __future__ import annotations

import statistics

from sagellm.core.types import RequestMetrics, StepMetrics


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(reqs: list[RequestMetrics], steps: list[StepMetrics]) -> dict[str, float | None]:
    done = [r for r in reqs if r.finished_s is not None]
    ttft = [r.first_token_s - r.arrival_s for r in done if r.first_token_s is not None]
    tpot = [
        (r.finished_s - r.first_token_s) / (r.num_output_tokens - 1)
        for r in done
        if r.first_token_s is not None and r.num_output_tokens > 1
    ]
    e2el = [r.finished_s - r.arrival_s for r in done]
    start = min((r.arrival_s for r in reqs), default=0.0)
    end = max((r.finished_s for r in done), default=start)
    dur = max(end - start, 1e-9)
    out_tokens = sum(r.num_output_tokens for r in done)
    compute_s = sum(s.compute_s for s in steps)
    m: dict[str, float | None] = {
        "num_requests": float(len(reqs)),
        "num_completed": float(len(done)),
        "duration_s": dur,
        "output_tokens": float(out_tokens),
        "request_throughput_per_s": len(done) / dur,
        "output_throughput_tok_per_s": out_tokens / dur,
        "compute_s": compute_s,
        "flops": sum(s.flops for s in steps),
        "num_steps": float(len(steps)),
        "num_preemptions": float(sum(r.preemptions for r in reqs)),
    }
    for name, xs in (("ttft_s", ttft), ("tpot_s", tpot), ("e2el_s", e2el)):
        m[f"mean_{name}"] = statistics.fmean(xs) if xs else None
        for q in (50, 90, 95, 99):
            m[f"p{q}_{name}"] = _pct(xs, q / 100)
    return m
