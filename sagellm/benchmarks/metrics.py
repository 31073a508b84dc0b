"""Benchmark metrics with vLLM ``bench serve`` definitions, plus MFU, KV hit rate, comm share
and cost per token.

Definitions (times in seconds, engine clock):

- ``num_requests`` counts every request offered, served or not; a request *completed* when it
  finished with reason "stop" or "length"; aborted and failed requests count in
  ``num_aborted`` / ``num_failed``, requests the engine refused at admission (reason
  "rejected") in ``num_rejected_requests``, and none of them in a latency or throughput metric;
- TTFT = first_token_s - arrival_s (completed requests that produced a token);
- TPOT = (e2e - ttft) / (output_tokens - 1), only for requests with > 1 output token;
- ITL = gaps between consecutive output tokens, pooled over all completed requests;
- E2EL = finished_s - arrival_s;
- duration = last completion - first arrival; throughputs divide by it;
- goodput = completed requests meeting every SLO they carry (TTFT and TPOT) per second;
  SLO attainment = those good requests / (completed + rejected): a rejected request is never
  good, so refusing work cannot raise either;
- MFU = analytic FLOPs of all steps / (duration * peak FLOP/s of the device);
- KV hit rate = prompt tokens served from cache / prompt tokens (completed requests);
- comm share = sum(comm_s) / sum(step time); step time = schedule + compute + sample;
- cost per token = device-seconds per output token (num_devices * duration / output tokens),
  and in currency when a price per device-hour is given.
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass

from sagellm.core.types import RequestMetrics, StepMetrics

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class SLOTargets:
    """Default SLOs applied to requests that carry none (None = no objective)."""

    ttft_s: float | None = None
    tpot_s: float | None = None


def percentile(xs: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _stats(name: str, xs: list[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        f"mean_{name}": statistics.fmean(xs) if xs else None,
        f"median_{name}": percentile(xs, 50),
    }
    for q in PERCENTILES:
        out[f"p{q}_{name}"] = percentile(xs, q)
    return out


def request_latencies(r: RequestMetrics) -> tuple[float | None, float | None, list[float]]:
    """(ttft_s, tpot_s, itls_s) of one finished request."""
    if r.first_token_s is None or r.finished_s is None:
        return None, None, []
    ttft = r.first_token_s - r.arrival_s
    n = r.num_output_tokens
    tpot = (r.finished_s - r.arrival_s - ttft) / (n - 1) if n > 1 else None
    t = r.token_times_s
    return ttft, tpot, [b - a for a, b in itertools.pairwise(t)]


def meets_slo(r: RequestMetrics, slo: SLOTargets, ttft_s: float | None, tpot_s: float | None):
    if slo.ttft_s is not None and (ttft_s is None or ttft_s > slo.ttft_s):
        return False
    return not (slo.tpot_s is not None and tpot_s is not None and tpot_s > slo.tpot_s)


def compute_metrics(
    reqs: list[RequestMetrics],
    steps: list[StepMetrics],
    slo: SLOTargets | None = None,
    peak_flops_per_s: float | None = None,
    num_devices: int = 1,
    price_per_device_hour: float | None = None,
) -> dict[str, float | None]:
    """Flat, unit-suffixed metrics of one run (see the module docstring for definitions)."""
    slo = slo or SLOTargets()
    done = [r for r in reqs if r.finish_reason in ("stop", "length")]
    num_rejected = sum(r.finish_reason == "rejected" for r in reqs)
    ttfts, tpots, itls, e2els = [], [], [], []
    good = 0
    for r in done:
        ttft, tpot, itl = request_latencies(r)
        if ttft is not None:
            ttfts.append(ttft)
        if tpot is not None:
            tpots.append(tpot)
        itls.extend(itl)
        e2els.append(r.finished_s - r.arrival_s)
        good += meets_slo(r, slo, ttft, tpot)
    start = min((r.arrival_s for r in reqs), default=0.0)
    end = max((r.finished_s for r in done), default=start)
    dur = end - start if done else 0.0
    out_tok = sum(r.num_output_tokens for r in done)
    in_tok = sum(r.num_prompt_tokens for r in done)
    cached = sum(r.num_cached_tokens for r in done)
    step_s = sum(s.schedule_s + s.compute_s + s.sample_s for s in steps)
    flops = sum(s.flops for s in steps)
    per_s = (lambda x: x / dur) if dur > 0 else (lambda x: None)
    m: dict[str, float | None] = {
        "num_requests": float(len(reqs)),
        "num_completed": float(len(done)),
        "num_aborted": float(sum(r.finish_reason == "abort" for r in reqs)),
        "num_failed": float(sum(r.finish_reason == "error" for r in reqs)),
        "num_rejected_requests": float(num_rejected),
        "num_preemptions": float(sum(r.preemptions for r in reqs)),
        "duration_s": dur,
        "total_input_tokens": float(in_tok),
        "total_output_tokens": float(out_tok),
        "request_throughput_per_s": per_s(len(done)),
        "output_throughput_tok_per_s": per_s(out_tok),
        "total_token_throughput_tok_per_s": per_s(out_tok + in_tok),
        "goodput_req_per_s": per_s(good),
        "slo_attainment": good / (len(done) + num_rejected) if done or num_rejected else None,
        "num_steps": float(len(steps)),
        "step_time_s": step_s,
        "flops": flops,
        "peak_flops_per_s": peak_flops_per_s,
        "mfu": flops / (dur * peak_flops_per_s) if dur > 0 and peak_flops_per_s else None,
        "kv_hit_rate": cached / in_tok if in_tok else None,
        "comm_share": sum(s.comm_s for s in steps) / step_s if step_s > 0 else None,
        "cost_device_s_per_token": num_devices * dur / out_tok if out_tok else None,
    }
    if price_per_device_hour is not None and m["cost_device_s_per_token"] is not None:
        m["cost_per_token"] = m["cost_device_s_per_token"] * price_per_device_hour / 3600.0
    for name, xs in (("ttft_s", ttfts), ("tpot_s", tpots), ("itl_s", itls), ("e2el_s", e2els)):
        m.update(_stats(name, xs))
    return m
