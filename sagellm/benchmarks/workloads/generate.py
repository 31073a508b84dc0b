"""Turns a :class:`WorkloadConfig` into concrete requests (token ids, arrival offsets)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sagellm.benchmarks.workloads.mooncake import read_mooncake_trace
from sagellm.benchmarks.workloads.spec import ArrivalConfig, LengthDist, WorkloadConfig


@dataclass(frozen=True)
class WorkloadRequest:
    """A request to submit ``arrival_offset_s`` seconds after the benchmark starts."""

    request_id: str
    arrival_offset_s: float
    prompt_token_ids: list[int]
    max_tokens: int
    tenant_id: str = "default"
    group: str | None = None  # shared-prefix group / session id, for analysis


def _lengths(d: LengthDist, n: int, rng: np.random.Generator) -> list[int]:
    hi = d.max if d.max is not None else max(d.mean * 4, d.mean + 1)
    if d.dist == "fixed":
        x = np.full(n, d.mean, dtype=float)
    elif d.dist == "uniform":
        x = rng.integers(d.min, hi + 1, size=n).astype(float)
    elif d.dist == "normal":
        x = rng.normal(d.mean, d.std, size=n)
    else:
        sigma = math.sqrt(math.log(1 + (d.std / d.mean) ** 2)) if d.std else 0.0
        x = rng.lognormal(math.log(d.mean) - sigma**2 / 2, sigma, size=n)
    return [int(v) for v in np.clip(np.rint(x), d.min, hi)]


def arrival_offsets(a: ArrivalConfig, n: int, rng: np.random.Generator) -> list[float]:
    """Cumulative arrival times in seconds, starting at 0 for the first request."""
    if a.process == "burst":
        return [0.0] * n
    mean_gap = 1.0 / a.rate_per_s
    if a.process == "poisson":
        gaps = rng.exponential(mean_gap, size=n)
    else:
        gaps = rng.gamma(a.burstiness, mean_gap / a.burstiness, size=n)
    gaps[0] = 0.0
    return [float(v) for v in np.cumsum(gaps)]


def _tokens(rng: np.random.Generator, n: int, vocab: int) -> list[int]:
    return rng.integers(0, vocab, size=n).tolist()


def build_workload(cfg: WorkloadConfig, vocab_size: int) -> list[WorkloadRequest]:
    """Deterministic requests for ``cfg`` (same config and seed -> identical requests)."""
    rng = np.random.default_rng(cfg.seed)
    vocab = min(vocab_size, 32000)  # stay clear of special tokens at the top of real vocabs
    if cfg.kind == "trace":
        return _trace(cfg, vocab)
    if cfg.kind == "multi_turn":
        return _multi_turn(cfg, vocab, rng)
    n = cfg.num_requests
    arrivals = arrival_offsets(cfg.arrival, n, rng)
    prompt_lens = _lengths(cfg.prompt_tokens, n, rng)
    out_lens = _lengths(cfg.output_tokens, n, rng)
    names = list(cfg.tenants)
    weights = np.array([cfg.tenants[k] for k in names], dtype=float)
    tenants = rng.choice(len(names), size=n, p=weights / weights.sum())
    prefixes = [_tokens(rng, cfg.shared_prefix_tokens, vocab) for _ in range(cfg.num_groups)]
    reqs = []
    for i in range(n):
        group = None
        ids = _tokens(rng, prompt_lens[i], vocab)
        if cfg.kind == "shared_prefix":
            g = i % cfg.num_groups
            group = f"g{g}"
            ids = prefixes[g] + ids
        reqs.append(
            WorkloadRequest(
                f"req-{i}", arrivals[i], ids, out_lens[i], names[int(tenants[i])], group
            )
        )
    return reqs


def _multi_turn(cfg: WorkloadConfig, vocab: int, rng: np.random.Generator) -> list:
    starts = arrival_offsets(cfg.arrival, cfg.num_sessions, rng)
    reqs = []
    for s in range(cfg.num_sessions):
        history: list[int] = []
        for t in range(cfg.turns_per_session):
            msg = _tokens(rng, _lengths(cfg.prompt_tokens, 1, rng)[0], vocab)
            n_out = _lengths(cfg.output_tokens, 1, rng)[0]
            prompt = history + msg
            reqs.append(
                WorkloadRequest(
                    f"s{s}-t{t}",
                    starts[s] + t * cfg.think_time_s,
                    prompt,
                    n_out,
                    group=f"s{s}",
                )
            )
            # the answer stands in as n_out fixed tokens so later turns share the whole history
            history = prompt + _tokens(rng, n_out, vocab)
    return sorted(reqs, key=lambda r: r.arrival_offset_s)


def _trace(cfg: WorkloadConfig, vocab: int) -> list[WorkloadRequest]:
    tc = cfg.trace
    tr = read_mooncake_trace(tc.path, skip_bad=tc.skip_bad_lines, max_records=tc.max_records)
    block = max(1, round(tc.block_tokens * tc.length_scale))
    cache: dict[int, list[int]] = {}

    def block_tokens(h: int) -> list[int]:
        if h not in cache:  # equal hash ids -> equal token content
            cache[h] = _tokens(np.random.default_rng([cfg.seed, h]), block, vocab)
        return cache[h]

    reqs = []
    t0 = tr.records[0].timestamp_ms if tr.records else 0.0
    for i, r in enumerate(tr.records):
        n_in = max(1, round(r.input_length * tc.length_scale))
        ids: list[int] = []
        for h in r.hash_ids:
            ids.extend(block_tokens(h))
        if len(ids) < n_in:
            ids.extend(
                _tokens(np.random.default_rng([cfg.seed, 1 << 40, i]), n_in - len(ids), vocab)
            )
        reqs.append(
            WorkloadRequest(
                f"trace-{i}",
                (r.timestamp_ms - t0) / 1000.0 * tc.time_scale,
                ids[:n_in],
                max(1, round(r.output_length * tc.length_scale)),
            )
        )
    return reqs
