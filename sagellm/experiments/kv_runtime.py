"""What ``notebooks/02_kv_runtime.ipynb`` calls: the KV runtime inside a real engine, written to
``results/kv_runtime/<run_id>/``.

(1) Tier occupancy over time and per-tenant quota usage: a small device pool with host and
disk tiers serves rounds of requests over a set of prefixes (tenant ``a`` has a hard quota,
``b`` none), so blocks are demoted and loaded back. (2) Migration bandwidth per direction vs
memcpy. (3) Fragmentation of a pool before and after ``defragment`` at several occupancies.
``metrics.json`` counts the engine's requests (``num_requests``, ``num_completed``).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import torch

from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.core.config import DEFAULT_MODEL
from sagellm.core.types import Request, SamplingParams
from sagellm.experiments.kv_migration_bench import migration_bandwidth
from sagellm.experiments.prefix_reuse import ExperimentRun
from sagellm.experiments.shared_prefix import shared_prefix_prompts
from sagellm.kv_runtime import KVPool, defragment

PRESETS: dict[str, dict] = {
    "ci": dict(
        model="tiny-random",  # a smoke run: plumbing, not quality or speed
        num_kv_blocks=12,
        host_tier_blocks=4,
        disk_tier_blocks=32,
        quota_a_blocks=8,
        num_prefixes=4,
        prefix_tokens=64,
        unique_tokens=8,
        rounds=2,
        output_tokens=2,
        migration_blocks=64,
        defrag_pool_blocks=64,
    ),
    "full": dict(
        model=DEFAULT_MODEL,
        num_kv_blocks=96,
        host_tier_blocks=32,
        disk_tier_blocks=256,
        quota_a_blocks=40,
        num_prefixes=6,
        prefix_tokens=256,
        unique_tokens=16,
        rounds=4,
        output_tokens=8,
        migration_blocks=128,
        defrag_pool_blocks=1024,
    ),
}


def _tiered_run(p: dict, model: str, cache_dir: str):
    """Rounds over the prefixes; returns (engine, occupancy rows, quota rows, ttft rows)."""
    from sagellm.engines.native import NativeEngine

    eng = NativeEngine.from_pretrained(
        model,
        block_size_tokens=16,
        num_kv_blocks=p["num_kv_blocks"],
        enable_prefix_caching=True,
        host_tier_blocks=p["host_tier_blocks"],
        disk_tier_blocks=p["disk_tier_blocks"],
        kv_cache_dir=cache_dir,
        tenant_quotas={"a": {"hard_blocks": p["quota_a_blocks"]}},
    )
    groups = [
        shared_prefix_prompts(2, p["prefix_tokens"], p["unique_tokens"], eng.arch.vocab_size, g)
        for g in range(p["num_prefixes"])
    ]
    sp = SamplingParams(max_tokens=p["output_tokens"], ignore_eos=True)
    occ, quota, ttft = [], [], []
    step = 0
    for rnd in range(p["rounds"]):
        for g, (_, prompts) in enumerate(groups):
            tenant = "a" if g % 2 == 0 else "b"
            for i, prompt in enumerate(prompts):
                tail = [(rnd * 7 + i) % 50 + 10]
                eng.add_request(Request(f"r{rnd}-g{g}-{i}", prompt + tail, sp, tenant_id=tenant))
        while eng.has_unfinished():
            eng.step()
            step += 1
            for o in eng.kv.hierarchy.occupancy():
                occ.append(
                    {"step": step, "round": rnd, "tier": o.tier, "blocks": o.num_used_blocks}
                )
            for t in ("a", "b"):
                quota.append({"step": step, "tenant": t, "blocks": eng.kv.quota.usage_blocks(t)})
        for m in eng.request_metrics():
            if m.request_id.startswith(f"r{rnd}-"):
                ttft.append(
                    {
                        "round": rnd,
                        "request": m.request_id,
                        "ttft_s": m.first_token_s - m.arrival_s,
                        "cached_tokens": m.num_cached_tokens,
                    }
                )
    return eng, occ, quota, ttft


def _defrag_rows(pool_blocks: int, seed: int = 0) -> list[dict[str, float]]:
    rows = []
    rng = random.Random(seed)
    for occupancy in (0.25, 0.5, 0.75):
        pool = KVPool(torch.zeros(2, 2, pool_blocks, 1, 16, 8), block_dim=2)
        ids = list(pool.allocate(pool_blocks).block_ids)
        rng.shuffle(ids)
        pool.free(ids[: round(pool_blocks * (1 - occupancy))])
        res = defragment(pool, [])
        rows.append(
            {
                "occupancy": occupancy,
                "fragmentation_before": res.fragmentation_before,
                "fragmentation_after": res.fragmentation_after,
                "moved_blocks": float(res.num_moved_blocks),
                "latency_s": res.latency_s,
            }
        )
    return rows


def run_kv_runtime_experiment(
    preset: str = "full",
    results_root: str | Path = "results",
    model: str | None = None,
    **overrides: object,
) -> ExperimentRun:
    """Run the three measurements with ``PRESETS[preset]`` (plus ``overrides``); ``model``
    None = the preset's model."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    model = model or p.pop("model")
    p.pop("model", None)
    model_path = resolve_experiment_model(model)
    with tempfile.TemporaryDirectory() as cache_dir:
        eng, occ, quota, ttft = _tiered_run(p, model_path, cache_dir)
        stats = eng.stats()
        usage = {u.tenant_id: u for u in eng.kv.quota.snapshot()}
        reqs = eng.request_metrics()
        eng.close()
    migration = pd.DataFrame(migration_bandwidth(p["migration_blocks"]))
    defrag = pd.DataFrame(_defrag_rows(p["defrag_pool_blocks"]))
    metrics = {
        "schema_version": float(SCHEMA_VERSION),
        "num_requests": float(len(reqs)),
        "num_completed": float(sum(m.finished_s is not None for m in reqs)),
        "token_hit_rate": stats.get("prefix_token_hit_rate", 0.0),
        "num_loaded_blocks": stats["num_loaded_blocks"],
        "num_demoted_blocks": stats["num_demoted_blocks"],
        "num_dropped_entries": stats["num_dropped_entries"],
        "quota_a_hard_violations": float(usage["a"].num_hard_violations),
        "quota_b_hard_violations": float(usage["b"].num_hard_violations) if "b" in usage else 0.0,
        "max_quota_a_blocks": float(
            max((r["blocks"] for r in quota if r["tenant"] == "a"), default=0)
        ),
    }
    for r in migration.to_dict("records"):
        metrics[f"bandwidth_{r['direction'].replace('->', '_to_')}_gb_per_s"] = r[
            "bandwidth_gb_per_s"
        ]
    tables = {
        "occupancy": pd.DataFrame(occ),
        "quota": pd.DataFrame(quota),
        "ttft": pd.DataFrame(ttft),
        "migration": migration,
        "defrag": defrag,
    }
    params = {"preset": preset, "model": model, **p}
    run_dir = write_experiment(
        results_root, "kv_runtime", params, metrics, tables, charts=_charts(tables)
    )
    return ExperimentRun(run_dir, metrics, tables)


def _charts(t: dict) -> dict:
    import altair as alt

    occ = (
        alt.Chart(t["occupancy"], title="KV blocks per tier over engine steps")
        .mark_line()
        .encode(x="step:Q", y="blocks:Q", color="tier:N")
    )
    bw = (
        alt.Chart(t["migration"], title="Migration bandwidth vs memcpy (GB/s)")
        .mark_bar()
        .encode(x="direction:N", y="bandwidth_gb_per_s:Q")
    )
    return {"tier_occupancy": occ, "migration_bandwidth": bw}
