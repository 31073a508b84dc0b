"""Policy sweep over a block trace: miss-ratio curves, metrics per policy, decision latency,
replay speed against libCacheSim. Writes ``results_root/<experiment>/<run_id>/``::

    config.yaml   what was run        metrics.json  flat summary (num_requests, num_completed, ...)
    sweep.parquet one row per policy x capacity     latency.parquet  p50/p99 per policy and op
    env.json, run.json, report.md (both tables)     miss_ratio_curve.{png,html}

(the run-folder contract, :mod:`sagellm.benchmarks.run_folder`).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sagellm.benchmarks.results import SCHEMA_VERSION, make_run_id
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.kv_policy.base import check_capacity, make_eviction_policy
from sagellm.kv_policy.cost_benefit import PrefillFlopModel
from sagellm.kv_policy.latency import TimedPolicy, latency_stats
from sagellm.kv_policy.simulator import simulate
from sagellm.kv_policy.traces import BlockTrace

Mode = Literal["object", "prefix"]


@dataclass(frozen=True)
class SweepRun:
    run_dir: Path
    table: object  # pandas.DataFrame, one row per policy x capacity
    latency: object  # pandas.DataFrame, one row per policy x operation
    metrics: dict[str, float | int | str | None]


def _replay_row(trace: BlockTrace, name: str, cap: int, mode: Mode, window, fm) -> dict:
    prefix = mode == "prefix"
    r = simulate(
        make_eviction_policy(name, cap, block_tokens=trace.block_tokens)
        if name == "cost_aware"
        else make_eviction_policy(name, cap),
        trace.requests,
        window_accesses=window,
        pin_request_blocks=prefix,
        leaves_first=prefix,
        block_tokens=trace.block_tokens,
        flop_model=fm,
    )
    return {"mode": mode, **r.as_dict()}


def _oracle_cols(trace: BlockTrace, name: str, cap: int, mode: Mode, workdir) -> dict:
    from sagellm.kv_policy.oracle import oracle_process_trace, oracle_replay, oracle_supports

    if not oracle_supports(name, cap) or mode != "object":
        return {}
    o = oracle_replay(name, trace.requests, cap)
    hit_c, wall_c = oracle_process_trace(name, trace.requests, cap, workdir)
    return {
        "libcachesim_hit_ratio": o.hit_ratio,
        "libcachesim_py_requests_per_s": o.requests_per_s,
        "libcachesim_c_requests_per_s": len(trace.requests) / wall_c if wall_c > 0 else None,
        "libcachesim_c_hit_ratio": hit_c,
    }


def run_policy_sweep(
    trace: BlockTrace,
    policies: Sequence[str],
    capacities_blocks: Sequence[int],
    *,
    modes: Sequence[Mode] = ("object", "prefix"),
    window_accesses: int | None = None,
    compare_libcachesim: bool = True,
    latency_capacity_blocks: int | None = None,
    flop_model: PrefillFlopModel | None = None,
    results_root: str | Path = "results",
    experiment: str = "kv_policy",
) -> SweepRun:
    """Replay ``trace`` through every policy at every capacity, in each mode ("object":
    plain cache, comparable to libCacheSim; "prefix": pinned requests, leaves-first)."""
    import pandas as pd

    caps = [check_capacity(c) for c in capacities_blocks]
    for m in modes:
        if m not in ("object", "prefix"):
            raise ValueError(f"modes must be 'object' or 'prefix', got {m!r}")
    for p in policies:
        make_eviction_policy(p, 1)  # fail fast on unknown names, listing the known ones
    fm = flop_model or PrefillFlopModel.smollm2_135m()
    config = {
        "trace": trace.source,
        "num_requests": len(trace.requests),
        "policies": list(policies),
        "capacities_blocks": caps,
        "modes": list(modes),
        "window_accesses": window_accesses,
        "flop_model": vars(fm),
        "compare_libcachesim": compare_libcachesim,
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
    run_dir = Path(results_root) / experiment / make_run_id(digest)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for mode in modes:
            for cap in caps:
                for name in policies:
                    row = _replay_row(trace, name, cap, mode, window_accesses, fm)
                    if compare_libcachesim:
                        row.update(_oracle_cols(trace, name, cap, mode, work))
                    rows.append(row)
    table = pd.DataFrame(rows)
    lru = table[table.policy == "lru"].set_index(["mode", "capacity_blocks"])["hit_ratio"]
    table["hit_ratio_delta_vs_lru"] = [
        r.hit_ratio - lru.get((r.mode, r.capacity_blocks), float("nan")) for r in table.itertuples()
    ]
    if "libcachesim_hit_ratio" in table:
        table["diff_vs_libcachesim_pp"] = 100 * (table.hit_ratio - table.libcachesim_hit_ratio)
        table["speed_ratio_vs_libcachesim_py"] = (
            table.requests_per_s / table.libcachesim_py_requests_per_s
        )
        table["speed_ratio_vs_libcachesim_c"] = (
            table.requests_per_s / table.libcachesim_c_requests_per_s
        )
    lat_cap = latency_capacity_blocks or caps[len(caps) // 2]
    lat_rows = []
    for name in policies:
        timed = TimedPolicy(make_eviction_policy(name, lat_cap))
        simulate(timed, trace.requests, block_tokens=trace.block_tokens)
        for s in latency_stats(timed):
            lat_rows.append({"policy": name, "capacity_blocks": lat_cap, **vars(s)})
    latency = pd.DataFrame(lat_rows)
    metrics = _summary(trace, table, latency)
    _write(run_dir, config, table, latency, metrics)
    return SweepRun(run_dir, table, latency, metrics)


def _summary(trace: BlockTrace, table, latency) -> dict[str, float | int | str | None]:
    m: dict[str, float | int | str | None] = {
        "schema_version": SCHEMA_VERSION,
        "num_requests": len(trace.requests),
        "num_completed": len(trace.requests),  # every request was replayed in every config
        "num_accesses": trace.num_accesses,
        "num_bad_lines": trace.num_bad_lines,
        "num_configs": len(table),
        "replay_requests_per_s_median": float(table.requests_per_s.median()),
    }
    if "diff_vs_libcachesim_pp" in table:
        d = table.diff_vs_libcachesim_pp.dropna()
        m["max_abs_diff_vs_libcachesim_pp"] = float(d.abs().max()) if len(d) else None
        for col in ("speed_ratio_vs_libcachesim_py", "speed_ratio_vs_libcachesim_c"):
            s = table[col].dropna()
            m[f"{col}_median"] = float(s.median()) if len(s) else None
    sel = latency[latency.op == "select_victims"].dropna()
    if len(sel):
        m["select_victims_p99_us_max"] = float(sel.p99_us.max())
    return m


def _write(run_dir: Path, config, table, latency, metrics) -> None:
    import altair as alt

    cols = ["mode", "policy", "capacity_blocks", "hit_ratio", "prefix_hit_ratio"]
    cols += ["flops_saved_ratio", "wrong_eviction_rate", "requests_per_s"]
    cols += [c for c in ("libcachesim_hit_ratio", "diff_vs_libcachesim_pp") if c in table]
    df = table.assign(miss_ratio=1 - table.hit_ratio)
    chart = (
        alt.Chart(df, title="Miss-ratio curves")
        .mark_line(point=True)
        .encode(
            x=alt.X("capacity_blocks:Q", scale=alt.Scale(type="log"), title="capacity (blocks)"),
            y=alt.Y("miss_ratio:Q", title="block miss ratio"),
            color="policy:N",
            strokeDash="mode:N",
            tooltip=["policy", "mode", "capacity_blocks", "hit_ratio"],
        )
    )
    write_experiment(
        run_dir.parent.parent,
        run_dir.parent.name,
        config,
        metrics,
        {"sweep": table, "latency": latency},
        run_dir.name,
        kind="kv_policy_sweep",
        charts={"miss_ratio_curve": chart},
        report_columns={"sweep": cols},
    )
