"""Online effect of the eviction policies: the native engine on a shared-prefix multi-turn
workload under memory pressure, TTFT and KV hit rate per policy in the same run.

Workload: ``num_sessions`` multi-turn sessions (``benchmarks.workloads`` kind ``multi_turn``:
turn k's prompt = earlier turns + their answers + a new message), each prefixed by one
system prompt of ``system_prompt_tokens`` shared by every session. Sessions start together
and advance a turn per think time, so the stream interleaves sessions turn by turn.

One engine per policy, same model, seed and pool. The KV pool holds ``cache_fraction`` of the
distinct full blocks the workload touches (at least what the longest request needs), so
policies must choose. Requests are served one at a time in arrival order; request i runs on
every engine before request i + 1 (the policy order rotates per request), so machine noise
hits all policies alike. TTFT = first token time - submit time, seconds; kv hit rate =
reused prompt tokens / prompt tokens.

Run folder ``<results_root>/kv_policy_online/<run_id>/``: ``config.json``, ``metrics.json``
(``num_requests``/``num_completed`` over all policies, then ``<policy>_ttft_p50_s``,
``<policy>_ttft_p95_s``, ``<policy>_kv_hit_rate``), ``requests.parquet``, ``summary.parquet``.

CLI: ``python -m sagellm.experiments.kv_policy_online --policies lru,arc,s3fifo --preset ci``
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sagellm.benchmarks.results import SCHEMA_VERSION, write_experiment
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.benchmarks.workloads.generate import WorkloadRequest, build_workload
from sagellm.benchmarks.workloads.spec import LengthDist, WorkloadConfig
from sagellm.core.config import DEFAULT_MODEL
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.kv_policy.base import EVICTION_POLICIES

PRESETS: dict[str, dict] = {
    "ci": dict(  # plumbing on a tiny random checkpoint: seconds
        model="tiny-random",
        num_sessions=3,
        turns_per_session=3,
        system_prompt_tokens=24,
        message_tokens=8,
        output_tokens=1,
        block_size_tokens=8,
        cache_fraction=0.5,
    ),
    "full": dict(  # SmolLM2-135M on CPU: a few minutes for six policies
        model=DEFAULT_MODEL,
        num_sessions=8,
        turns_per_session=4,
        system_prompt_tokens=256,
        message_tokens=64,
        output_tokens=4,
        block_size_tokens=16,
        cache_fraction=0.4,
    ),
}


@dataclass(frozen=True)
class OnlineRun:
    """Where the run was written, its flat metrics and its tables (pandas DataFrames)."""

    run_dir: Path
    metrics: dict[str, float]
    requests: object  # one row per (policy, request)
    summary: object  # one row per policy


def system_multi_turn(p: dict, vocab_size: int, seed: int) -> list[WorkloadRequest]:
    """The multi-turn sessions of ``p`` with one shared system prompt in front of each."""
    cfg = WorkloadConfig(
        kind="multi_turn",
        seed=seed,
        num_sessions=p["num_sessions"],
        turns_per_session=p["turns_per_session"],
        prompt_tokens=LengthDist(mean=p["message_tokens"]),
        output_tokens=LengthDist(mean=p["output_tokens"]),
    )
    rng = np.random.default_rng(seed + 1)
    system = rng.integers(10, min(vocab_size, 32000), p["system_prompt_tokens"]).tolist()
    return [
        WorkloadRequest(
            r.request_id, r.arrival_offset_s, system + r.prompt_token_ids, r.max_tokens, r.tenant_id
        )
        for r in build_workload(cfg, vocab_size)
    ]


def distinct_blocks(prompts: list[list[int]], block_size_tokens: int) -> int:
    """Distinct full-block prefixes over ``prompts`` (what an unbounded cache would hold)."""
    seen: set[tuple[int, ...]] = set()
    for p in prompts:
        for end in range(block_size_tokens, len(p) + 1, block_size_tokens):
            seen.add(tuple(p[:end]))
    return len(seen)


def pool_blocks(reqs: list[WorkloadRequest], block_size_tokens: int, cache_fraction: float) -> int:
    """``cache_fraction`` of the distinct blocks, but never less than the longest request."""
    if not 0.0 < cache_fraction <= 1.0:
        raise ValueError(f"cache_fraction must be in (0, 1], got {cache_fraction}")
    need = max(-(-(len(r.prompt_token_ids) + r.max_tokens) // block_size_tokens) for r in reqs)
    total = distinct_blocks([r.prompt_token_ids for r in reqs], block_size_tokens)
    return max(need + 1, round(cache_fraction * total))


def _serve(engine: NativeEngine, rid: str, r: WorkloadRequest) -> dict[str, float]:
    sp = SamplingParams(max_tokens=r.max_tokens, ignore_eos=True)
    engine.add_request(Request(rid, r.prompt_token_ids, sp, arrival_s=engine.clock()))
    while engine.has_unfinished():
        engine.step()
    m = next(x for x in reversed(engine.request_metrics()) if x.request_id == rid)
    done = m.finished_s is not None and m.first_token_s is not None
    return {
        "ttft_s": m.first_token_s - m.arrival_s if done else float("nan"),
        "prompt_tokens": float(len(r.prompt_token_ids)),
        "cached_tokens": float(m.num_cached_tokens),
        "completed": float(done),
    }


def _summary(rows, policies: list[str]):
    import pandas as pd

    out = []
    for pol in policies:
        g = rows[rows.policy == pol]
        ttft = g.ttft_s.dropna().to_numpy()
        out.append(
            {
                "policy": pol,
                "ttft_p50_s": float(np.percentile(ttft, 50)) if len(ttft) else float("nan"),
                "ttft_p95_s": float(np.percentile(ttft, 95)) if len(ttft) else float("nan"),
                "kv_hit_rate": float(g.cached_tokens.sum() / g.prompt_tokens.sum()),
                "num_completed": int(g.completed.sum()),
            }
        )
    return pd.DataFrame(out)


def run_online_policies(
    policies: list[str] | None = None,
    preset: str = "full",
    results_root: str | Path = "results",
    seed: int = 0,
    **overrides: object,
) -> OnlineRun:
    """Serve the workload of ``PRESETS[preset]`` (plus ``overrides``) once per policy,
    interleaved request by request; write and return the run (see the module docstring)."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    policies = list(policies or EVICTION_POLICIES.names())
    for pol in policies:
        EVICTION_POLICIES.get(pol)  # unknown names list the known ones
    p = {**PRESETS[preset], **overrides}
    model_path = resolve_experiment_model(str(p["model"]))
    bs = int(p["block_size_tokens"])
    probe = NativeEngine.from_pretrained(model_path, block_size_tokens=bs, num_kv_blocks=1)
    reqs = system_multi_turn(p, probe.arch.vocab_size, seed)
    del probe
    num_blocks = pool_blocks(reqs, bs, float(p["cache_fraction"]))
    engines: dict[str, NativeEngine] = {}
    for pol in policies:
        engines[pol] = NativeEngine.from_pretrained(
            model_path,
            block_size_tokens=bs,
            num_kv_blocks=num_blocks,
            enable_prefix_caching=True,
            eviction_policy=pol,
            seed=seed,
        )
    rows = []
    for i, r in enumerate(reqs):
        for j in range(len(policies)):
            pol = policies[(i + j) % len(policies)]
            rows.append(
                {
                    "policy": pol,
                    "request_id": r.request_id,
                    "order": j,
                    **_serve(engines[pol], f"{pol}-{r.request_id}", r),
                }
            )
    table = pd.DataFrame(rows)
    summary = _summary(table, policies)
    metrics: dict[str, float] = {
        "schema_version": float(SCHEMA_VERSION),
        "num_requests": float(len(table)),
        "num_completed": float(table.completed.sum()),
        "num_kv_blocks": float(num_blocks),
        "distinct_blocks": float(distinct_blocks([r.prompt_token_ids for r in reqs], bs)),
    }
    for s in summary.to_dict("records"):
        for k in ("ttft_p50_s", "ttft_p95_s", "kv_hit_rate"):
            metrics[f"{s['policy']}_{k}"] = s[k]
    for pol, eng in engines.items():
        metrics[f"{pol}_num_dropped_entries"] = eng.stats()["num_dropped_entries"]
        eng.close()
    params = {"preset": preset, "policies": policies, "seed": seed, **p}
    tables = {"requests": table, "summary": summary}
    run_dir = write_experiment(results_root, "kv_policy_online", params, metrics, tables)
    return OnlineRun(run_dir, metrics, table, summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default=",".join(EVICTION_POLICIES.names()))
    ap.add_argument("--preset", default="full", choices=sorted(PRESETS))
    ap.add_argument("--results-root", default="results")
    ap.add_argument("--model", default=None, help="override the preset's model")
    ap.add_argument("--cache-fraction", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    over: dict[str, object] = {}
    if args.model is not None:
        over["model"] = args.model
    if args.cache_fraction is not None:
        over["cache_fraction"] = args.cache_fraction
    run = run_online_policies(
        args.policies.split(","), args.preset, args.results_root, args.seed, **over
    )
    print(run.summary.to_string(index=False))
    print(
        f"num_kv_blocks {run.metrics['num_kv_blocks']:.0f} of distinct blocks "
        f"{run.metrics['distinct_blocks']:.0f}; written to {run.run_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
