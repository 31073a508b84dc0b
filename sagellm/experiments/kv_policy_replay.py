"""Command line: replay a trace through eviction policies and write a results folder.

    python -m sagellm.experiments.kv_policy_replay --trace PATH --policies lru,arc \
        --capacities 1000,5000
    python -m sagellm.experiments.kv_policy_replay --synthetic zipf --num-requests 20000 --seed 1

Prints one line per mode x policy x capacity and the run folder. ``--predictors`` also scores
the lifetime predictor (MAE, calibration) and the cost-benefit model (hindsight accuracy),
with FLOP/s and host bandwidth measured on this machine unless given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from sagellm.benchmarks.workloads.mooncake import (
    MOONCAKE_BLOCK_TOKENS,
    TraceFormatError,
    read_mooncake_trace,
)
from sagellm.core.io import atomic_write_json
from sagellm.kv_policy.base import EVICTION_POLICIES
from sagellm.kv_policy.traces import SYNTHETIC_TRACES, BlockTrace


def load_mooncake_blocks(
    path: str | Path, skip_bad: bool = False, max_records: int | None = None
) -> BlockTrace:
    """Read a Mooncake JSONL trace; each record's ``hash_ids`` become one request.

    A malformed line raises ``TraceFormatError`` with its line number, or with ``skip_bad``
    is skipped and counted in ``num_bad_lines``.
    """
    t = read_mooncake_trace(path, skip_bad=skip_bad, max_records=max_records)
    return BlockTrace(
        [r.hash_ids for r in t.records],
        [r.timestamp_ms / 1000.0 for r in t.records],
        t.source,
        MOONCAKE_BLOCK_TOKENS,
        t.num_bad_lines,
    )


def _ints(text: str, field: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{field} must be comma-separated integers, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sagellm.experiments.kv_policy_replay", description=__doc__
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace", help="Mooncake-format JSONL file (read in place)")
    src.add_argument("--synthetic", choices=sorted(SYNTHETIC_TRACES))
    p.add_argument("--num-requests", type=int, default=10_000, help="synthetic traces only")
    p.add_argument("--seed", type=int, default=0, help="synthetic traces only")
    p.add_argument("--max-records", type=int, default=None, help="first N trace records")
    p.add_argument("--skip-bad", action="store_true", help="skip and count malformed lines")
    p.add_argument("--policies", default="lru,lfu,arc,s3fifo,sieve,cost_aware")
    p.add_argument("--capacities", default="1000,5000,20000", help="blocks, comma-separated")
    p.add_argument("--modes", default="object,prefix")
    p.add_argument("--window", type=int, default=None, help="wrong-eviction window, lookups")
    p.add_argument("--no-libcachesim", action="store_true")
    p.add_argument("--predictors", action="store_true")
    p.add_argument("--speed-repeats", type=int, default=0,
                   help="also time ours vs libcachesim (py and C loops), interleaved")  # fmt: skip
    p.add_argument("--flops-per-s", type=float, default=None)
    p.add_argument("--host-bandwidth-bytes-per-s", type=float, default=None)
    p.add_argument("--block-size-bytes", type=int, default=30 * 2 * 3 * 64 * 512 * 4,
                   help="KV bytes per block (default: SmolLM2-135M fp32, 512 tokens)")  # fmt: skip
    p.add_argument("--results-root", default="results")
    p.add_argument("--experiment", default="kv_policy")
    return p


def _load(args) -> BlockTrace:
    if args.trace:
        return load_mooncake_blocks(args.trace, args.skip_bad, args.max_records)
    if args.synthetic == "multi_turn":
        return SYNTHETIC_TRACES["multi_turn"](num_sessions=max(args.num_requests // 5, 1),
                                              seed=args.seed)  # fmt: skip
    return SYNTHETIC_TRACES[args.synthetic](args.num_requests, seed=args.seed)


def _predictors(args, trace: BlockTrace, capacity: int) -> dict:
    from sagellm.kv_policy.cost_benefit import (
        PrefillFlopModel,
        RooflineCostBenefitModel,
        measure_copy_bandwidth_bytes_per_s,
        measure_matmul_flops_per_s,
    )
    from sagellm.kv_policy.cost_benefit_eval import evaluate_cost_benefit
    from sagellm.kv_policy.lifetime import evaluate_lifetime

    flops = args.flops_per_s or measure_matmul_flops_per_s()
    bw = args.host_bandwidth_bytes_per_s or measure_copy_bandwidth_bytes_per_s()
    model = RooflineCostBenefitModel(PrefillFlopModel.smollm2_135m(), flops, {"host": bw})
    life = evaluate_lifetime(trace.requests, horizon=float(capacity))
    cb = evaluate_cost_benefit(trace.requests, capacity, model, args.block_size_bytes, capacity)
    return {
        "capacity_blocks": capacity,
        "flops_per_s": flops,
        "host_bandwidth_bytes_per_s": bw,
        "block_size_bytes": args.block_size_bytes,
        "lifetime": asdict(life),
        "cost_benefit": asdict(cb),
    }


def main(argv: list[str] | None = None) -> int:
    from sagellm.experiments.kv_policy_sweep import run_policy_sweep

    args = _parser().parse_args(argv)
    try:
        trace = _load(args)
        policies = [p.strip() for p in args.policies.split(",") if p.strip()]
        caps = _ints(args.capacities, "capacities")
        run = run_policy_sweep(
            trace,
            policies,
            caps,
            modes=[m.strip() for m in args.modes.split(",")],
            window_accesses=args.window,
            compare_libcachesim=not args.no_libcachesim,
            results_root=args.results_root,
            experiment=args.experiment,
        )
    except (TraceFormatError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cols = ["mode", "policy", "capacity_blocks", "hit_ratio", "prefix_hit_ratio"]
    cols += ["flops_saved_ratio", "wrong_eviction_rate", "requests_per_s"]
    extra = ["libcachesim_hit_ratio", "diff_vs_libcachesim_pp", "speed_ratio_vs_libcachesim_py"]
    cols += [c for c in [*extra, "speed_ratio_vs_libcachesim_c"] if c in run.table]
    print(
        f"trace {trace.source}: {len(trace.requests)} requests, {trace.num_accesses} lookups, "
        f"{trace.num_bad_lines} bad lines skipped; policies known: {EVICTION_POLICIES.names()}"
    )
    print(run.table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(run.latency.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    if args.speed_repeats:
        from sagellm.kv_policy.oracle import oracle_supports
        from sagellm.kv_policy.speed import compare_replay_speed

        for name in policies:
            for cap in caps:
                if oracle_supports(name, cap):
                    s = compare_replay_speed(trace, name, cap, args.speed_repeats)
                    print(
                        f"speed {name} @{cap}: ours {s.ours_requests_per_s:.0f} req/s, "
                        f"libcachesim py {s.libcachesim_py_requests_per_s:.0f} "
                        f"(x{s.ratio_vs_py:.2f}), C {s.libcachesim_c_requests_per_s:.0f} "
                        f"(x{s.ratio_vs_c:.2f})"
                    )
    if args.predictors:
        extras = _predictors(args, trace, caps[len(caps) // 2])
        atomic_write_json(run.run_dir / "predictors.json", extras)
        print(json.dumps(extras, indent=1, default=str))
    print(f"results: {run.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
