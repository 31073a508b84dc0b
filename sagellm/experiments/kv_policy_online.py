"""Online effect of the eviction policies: the native engine serving a shared-prefix multi-turn
workload under memory pressure, TTFT and KV hit rate per policy in the same run.

Workload: ``num_sessions`` multi-turn sessions (``benchmarks.workloads`` kind ``multi_turn``:
turn k's prompt = earlier turns + their answers + a new message), each behind one system
prompt of ``system_prompt_tokens`` shared by every session. Sessions start at Poisson times
(``session_rate_per_s``) and send a turn every ``think_time_s``, open loop: requests arrive
while others run and are batched with them.

One engine per policy, same model, seed and pool, each driven by
:class:`~sagellm.benchmarks.runner.BenchmarkRunner` in ``arrival`` mode (a request is
submitted at its arrival time; queueing delay counts in its TTFT). The KV pool holds
``cache_fraction`` of the distinct full blocks the workload touches (at least what the longest
request needs), so policies must choose. The engines advance in rounds, one engine step each,
the order rotated every round (each policy goes first equally often); each engine's clock
stands still while another runs, so its arrivals, waits and TTFTs lie on its own timeline, as
if it had the machine alone, while a slow spell of a shared machine lands on every policy
within one round. Each engine first serves ``warmup_requests`` requests drawn with another
seed (first-use costs; they share no prefix with the measured ones). TTFT = first token -
arrival, seconds; kv hit rate = reused prompt tokens / prompt tokens of completed requests
(:mod:`sagellm.benchmarks.metrics`).

Run folder ``<results_root>/kv_policy_online/<run_id>/`` (the run-folder contract,
:mod:`sagellm.benchmarks.run_folder`): ``config.yaml``, ``env.json``, ``metrics.json``
(``num_requests``/``num_completed`` over all policies, then ``<policy>_ttft_p50_s``,
``<policy>_ttft_p95_s``, ``<policy>_kv_hit_rate``, ``<policy>_num_preemptions``,
``<policy>_num_dropped_entries``), ``requests.parquet`` (one row per policy x request),
``summary.parquet`` (one per policy), ``rounds.parquet`` (which engine stepped when),
``policies.{png,html}`` (TTFT and KV hit rate per policy) and ``report.md``.

CLI: ``python -m sagellm.experiments.kv_policy_online --policies lru,arc,s3fifo --preset ci``
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.device import peak_flops
from sagellm.benchmarks.lockstep import PausableClock
from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.runner import BenchmarkRunner, RunResult, WorkloadBuilder
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.benchmarks.workloads import (
    ArrivalConfig,
    LengthDist,
    WorkloadConfig,
    WorkloadRequest,
    build_workload,
)
from sagellm.core.config import DEFAULT_MODEL
from sagellm.engines.native import NativeEngine
from sagellm.experiments.kv_policy_charts import online_policy_chart
from sagellm.kv_policy.base import EVICTION_POLICIES

_REPORT_REQUEST_COLUMNS = ("policy", "request_id", "ttft_s", "prompt_tokens", "cached_tokens")
PRESETS: dict[str, dict] = {
    "ci": dict(  # plumbing on a tiny random checkpoint: seconds
        model="tiny-random",
        num_sessions=3,
        turns_per_session=3,
        system_prompt_tokens=24,
        message_tokens=8,
        output_tokens=2,
        block_size_tokens=8,
        cache_fraction=0.5,
        session_rate_per_s=50.0,
        think_time_s=0.05,
        warmup_requests=1,
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
        session_rate_per_s=2.0,
        think_time_s=2.0,
        warmup_requests=1,
    ),
}


@dataclass(frozen=True)
class OnlineRun:
    """Where the run was written, its flat metrics and its tables (pandas DataFrames)."""

    run_dir: Path
    metrics: dict[str, float]
    requests: object  # one row per (policy, request)
    summary: object  # one row per policy
    rounds: object  # one row per (round, position): the policy that stepped


def online_workload(p: dict, seed: int) -> WorkloadConfig:
    """The multi-turn sessions of preset ``p`` (without the system prompt, see
    :func:`with_system_prompt`)."""
    return WorkloadConfig(
        kind="multi_turn",
        seed=seed,
        num_sessions=p["num_sessions"],
        turns_per_session=p["turns_per_session"],
        think_time_s=p["think_time_s"],
        arrival=ArrivalConfig(process="poisson", rate_per_s=p["session_rate_per_s"]),
        prompt_tokens=LengthDist(mean=p["message_tokens"]),
        output_tokens=LengthDist(mean=p["output_tokens"]),
    )


def with_system_prompt(
    workload: WorkloadConfig, vocab_size: int, system_prompt_tokens: int
) -> list[WorkloadRequest]:
    """``build_workload(workload)`` with one system prompt of ``system_prompt_tokens`` (drawn
    from the workload's seed, with the workload generator's token range) in front of every
    request; a :class:`BenchmarkRunner` ``build`` function once the count is bound."""
    system: list[int] = []
    if system_prompt_tokens:
        one = WorkloadConfig(
            seed=workload.seed, num_requests=1, prompt_tokens=LengthDist(mean=system_prompt_tokens)
        )
        system = build_workload(one, vocab_size)[0].prompt_token_ids
    return [
        dataclasses.replace(r, prompt_token_ids=system + r.prompt_token_ids)
        for r in build_workload(workload, vocab_size)
    ]


def system_multi_turn(p: dict, vocab_size: int, seed: int) -> list[WorkloadRequest]:
    """The requests of preset ``p``: multi-turn sessions behind one shared system prompt."""
    return with_system_prompt(online_workload(p, seed), vocab_size, p["system_prompt_tokens"])


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


def serve_interleaved(
    engines: dict[str, NativeEngine],
    config: BenchmarkConfig,
    build: WorkloadBuilder,
    peak_flops_per_s: float,
) -> tuple[dict[str, RunResult], list[dict[str, int | str]]]:
    """Run ``config`` on every engine through its own :class:`BenchmarkRunner`, one engine
    step each per round, the order rotated per round; each engine's clock is paused while the
    others run. Returns each engine's result and the (round, position, name) of every step."""
    clocks = {name: PausableClock() for name in engines}
    gens: dict[str, Generator[None, None, RunResult]] = {}
    for name, eng in engines.items():
        eng.clock_fn = clocks[name]
        runner = BenchmarkRunner(eng, progress=False, build=build)
        gens[name] = runner.iter_run(config, peak_flops_per_s)
    results: dict[str, RunResult] = {}
    rounds: list[dict[str, int | str]] = []
    active = list(engines)
    rnd = 0
    while active:
        k = rnd % len(active)
        for pos, name in enumerate(active[k:] + active[:k]):
            clocks[name].resume()
            try:
                next(gens[name])
            except StopIteration as stop:
                results[name] = stop.value
            finally:
                clocks[name].pause()
            rounds.append({"round": rnd, "position": pos, "policy": name})
        active = [n for n in active if n not in results]
        rnd += 1
    return results, rounds


def _request_rows(policy: str, res: RunResult) -> list[dict[str, object]]:
    reqs = res.repeats[0].requests
    t0 = min((m.arrival_s for m in reqs), default=0.0)
    rows = []
    for m in sorted(reqs, key=lambda m: (m.arrival_s, m.request_id)):
        done = m.finish_reason in ("stop", "length") and m.first_token_s is not None
        rows.append(
            {
                "policy": policy,
                "request_id": m.request_id.removeprefix("r0-"),  # the runner's repeat tag
                "arrival_s": m.arrival_s - t0,
                "ttft_s": m.first_token_s - m.arrival_s if done else float("nan"),
                "prompt_tokens": m.num_prompt_tokens,
                "cached_tokens": m.num_cached_tokens,
                "output_tokens": m.num_output_tokens,
                "finish_reason": m.finish_reason,
                "completed": done,
            }
        )
    return rows


def _summary_row(policy: str, res: RunResult) -> dict[str, object]:
    m, steps = res.metrics, res.repeats[0].steps
    nan = float("nan")
    return {
        "policy": policy,
        "ttft_p50_s": nan if m["p50_ttft_s"] is None else m["p50_ttft_s"],
        "ttft_p95_s": nan if m["p95_ttft_s"] is None else m["p95_ttft_s"],
        "kv_hit_rate": nan if m["kv_hit_rate"] is None else m["kv_hit_rate"],
        "num_requests": int(m["num_requests"]),
        "num_completed": int(m["num_completed"]),
        "num_preemptions": int(m["num_preemptions"]),
        "mean_num_seqs": sum(s.num_seqs for s in steps) / len(steps) if steps else nan,
        "duration_s": m["duration_s"],
    }


def _make_engines(model_path: str, policies: list[str], p: dict, seed: int):
    """(requests of the workload, KV pool blocks, one engine per policy)."""
    bs = int(p["block_size_tokens"])
    probe = NativeEngine.from_pretrained(model_path, block_size_tokens=bs, num_kv_blocks=1)
    reqs = system_multi_turn(p, probe.arch.vocab_size, seed)
    del probe
    num_blocks = pool_blocks(reqs, bs, float(p["cache_fraction"]))
    engines = {
        pol: NativeEngine.from_pretrained(
            model_path,
            block_size_tokens=bs,
            num_kv_blocks=num_blocks,
            enable_prefix_caching=True,
            eviction_policy=pol,
            seed=seed,
        )
        for pol in policies
    }
    return reqs, num_blocks, engines


def _run_metrics(summary, dropped: dict[str, float], extra: dict[str, float]) -> dict[str, float]:
    metrics: dict[str, float] = {
        "schema_version": float(SCHEMA_VERSION),
        "num_requests": float(summary.num_requests.sum()),
        "num_completed": float(summary.num_completed.sum()),
        **extra,
    }
    for s in summary.to_dict("records"):
        for k in ("ttft_p50_s", "ttft_p95_s", "kv_hit_rate", "num_preemptions"):
            metrics[f"{s['policy']}_{k}"] = float(s[k])
        metrics[f"{s['policy']}_num_dropped_entries"] = dropped[s["policy"]]
    return metrics


def run_online_policies(
    policies: list[str] | None = None,
    preset: str = "full",
    results_root: str | Path = "results",
    seed: int = 0,
    **overrides: object,
) -> OnlineRun:
    """Serve the workload of ``PRESETS[preset]`` (plus ``overrides``) on one engine per
    policy, concurrently and interleaved step by step; write and return the run (see the
    module docstring)."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    policies = list(policies or EVICTION_POLICIES.names())
    for pol in policies:
        EVICTION_POLICIES.get(pol)  # unknown names list the known ones
    p = {**PRESETS[preset], **overrides}
    reqs, num_blocks, engines = _make_engines(
        resolve_experiment_model(str(p["model"])), policies, p, seed
    )
    first = engines[policies[0]]
    config = BenchmarkConfig(
        experiment="kv_policy_online",
        engine=first.config,  # the engines are given: the runner reads only the dtype
        workload=online_workload(p, seed),
        mode="arrival",
        warmup_requests=int(p["warmup_requests"]),
    )
    build = functools.partial(with_system_prompt, system_prompt_tokens=p["system_prompt_tokens"])
    try:
        peak = peak_flops(str(first.device), first.config.model.dtype)
        results, rounds = serve_interleaved(engines, config, build, peak)
        dropped = {pol: eng.stats()["num_dropped_entries"] for pol, eng in engines.items()}
    finally:
        for eng in engines.values():
            eng.close()
    table = pd.DataFrame([row for pol in policies for row in _request_rows(pol, results[pol])])
    summary = pd.DataFrame([_summary_row(pol, results[pol]) for pol in policies])
    bs = int(p["block_size_tokens"])
    distinct = distinct_blocks([r.prompt_token_ids for r in reqs], bs)
    extra = {"num_kv_blocks": float(num_blocks), "distinct_blocks": float(distinct)}
    metrics = _run_metrics(summary, dropped, extra)
    params = {"preset": preset, "policies": policies, "seed": seed, **p}
    tables = {"requests": table, "summary": summary, "rounds": pd.DataFrame(rounds)}
    run_dir = write_experiment(
        results_root,
        "kv_policy_online",
        params,
        metrics,
        tables,
        charts={"policies": online_policy_chart(summary)},
        report_columns={"requests": [*_REPORT_REQUEST_COLUMNS]},
    )
    return OnlineRun(run_dir, metrics, table, summary, tables["rounds"])


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
