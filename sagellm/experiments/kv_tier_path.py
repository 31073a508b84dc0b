"""KV tiers on the engine path: the migration policy's demote/drop decisions and the overlap
of tier loads with compute, measured in one run (``results/kv_tier_path/<run_id>/``).

Workload: ``num_prefixes`` system prompts of ``prefix_tokens`` tokens, each followed by a few
unique tokens, requested round-robin for ``rounds`` rounds, one new request every ``stagger``
steps while earlier ones still decode. The prefixes together need more blocks than the device
pool holds, so a prefix's blocks leave the device before it is asked for again (reuse distance
larger than the pool): they are demoted to host or disk, or dropped, as the configured
``migration_policy`` decides, and loaded back on the next hit.

Two engines (same model, same config, ``overlap_kv_loads`` off and on) get the same requests
at the same steps and are stepped alternately, so a slow spell of the machine lands on both.
Per mode: load seconds the steps waited for (exposed) and that ran during a forward (hidden),
blocks loaded, forward seconds; the greedy outputs of the two engines are compared token for
token (``outputs_equal``). The off engine's decision log (``decisions.parquet``: one row per
block leaving a tier, predicted recompute vs transfer seconds, measured store/load, missed
drops with their measured recompute) is summarised in ``metrics.json``.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path

from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.benchmarks.tiny_model import resolve_experiment_model
from sagellm.core.config import DEFAULT_MODEL
from sagellm.core.types import Request, SamplingParams
from sagellm.experiments.prefix_reuse import ExperimentRun
from sagellm.experiments.shared_prefix import shared_prefix_prompts

PRESETS: dict[str, dict] = {
    "ci": dict(
        model="tiny-random",  # plumbing on a tiny random checkpoint: seconds
        num_kv_blocks=14,
        host_tier_blocks=2,
        disk_tier_blocks=2,  # full soon: the bottom tier drops too
        num_prefixes=6,
        prefix_tokens=48,
        unique_tokens=8,
        rounds=3,
        output_tokens=6,
        stagger=2,
        migration_policy="cost_benefit",
    ),
    "full": dict(
        model=DEFAULT_MODEL,  # SmolLM2-135M: a few minutes on 2 cores
        num_kv_blocks=80,
        host_tier_blocks=24,
        disk_tier_blocks=16,  # fills up: the bottom tier drops
        num_prefixes=6,
        prefix_tokens=256,
        unique_tokens=16,
        rounds=3,
        output_tokens=16,
        stagger=4,
        migration_policy="cost_benefit",
    ),
}


def _engine(model: str, p: dict, cache_dir: str, overlap: bool):
    from sagellm.engines.native import NativeEngine

    return NativeEngine.from_pretrained(
        model,
        block_size_tokens=16,
        num_kv_blocks=p["num_kv_blocks"],
        enable_prefix_caching=True,
        host_tier_blocks=p["host_tier_blocks"],
        disk_tier_blocks=p["disk_tier_blocks"],
        kv_cache_dir=cache_dir,
        migration_policy=p["migration_policy"],
        overlap_kv_loads=overlap,
    )


def _mode_metrics(eng, prefix: str) -> dict[str, float]:
    steps = eng.step_metrics()
    st = eng.stats()
    return {
        f"{prefix}_kv_load_exposed_s": sum(s.kv_load_s for s in steps),
        f"{prefix}_kv_load_hidden_s": sum(s.kv_load_hidden_s for s in steps),
        f"{prefix}_num_loaded_blocks": st["num_loaded_blocks"],
        f"{prefix}_compute_s": sum(s.compute_s for s in steps),
        f"{prefix}_num_steps": float(len(steps)),
        f"{prefix}_kv_hit_rate": st.get("prefix_token_hit_rate", 0.0),
    }


def run_tier_path(
    preset: str = "ci", results_root: str | Path = "results", **overrides
) -> ExperimentRun:
    """Serve the workload with overlap off and on (see the module docstring); write and
    return the run."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    model = resolve_experiment_model(str(p["model"]))
    with tempfile.TemporaryDirectory() as off_dir, tempfile.TemporaryDirectory() as on_dir:
        engines = {"off": _engine(model, p, off_dir, False), "on": _engine(model, p, on_dir, True)}
        vocab = engines["off"].arch.vocab_size
        groups = [
            shared_prefix_prompts(p["rounds"], p["prefix_tokens"], p["unique_tokens"], vocab, g)[1]
            for g in range(p["num_prefixes"])
        ]
        prompts = [groups[g][r] for r in range(p["rounds"]) for g in range(p["num_prefixes"])]
        sp = SamplingParams(max_tokens=p["output_tokens"], ignore_eos=True)
        step = 0
        while prompts or any(e.has_unfinished() for e in engines.values()):
            if prompts and step % p["stagger"] == 0:
                ids = prompts.pop(0)
                for e in engines.values():
                    e.add_request(Request(f"r{step}", ids, sp))
            for e in engines.values():
                e.step()
            step += 1
        outs = {
            k: {m.request_id: tuple(e.output_token_ids(m.request_id)) for m in e.request_metrics()}
            for k, e in engines.items()
        }
        log = engines["off"].kv.migration_log
        decisions = pd.DataFrame(
            [{**asdict(r), "predicted_transfer_s": r.predicted_transfer_s} for r in log]
        )
        metrics: dict[str, float] = {
            "schema_version": float(SCHEMA_VERSION),
            "num_requests": float(len(outs["off"])),
            "outputs_equal": float(outs["off"] == outs["on"]),
            **_mode_metrics(engines["off"], "off"),
            **_mode_metrics(engines["on"], "on"),
        }
        if len(decisions):
            demote = decisions.decision.str.startswith("demote")
            metrics.update(
                num_demote_decisions=float(demote.sum()),
                num_drop_decisions=float((~demote).sum()),
                num_missed_drops=float(decisions.missed.sum()),
                mean_predicted_recompute_s=float(decisions.predicted_recompute_s.mean()),
                mean_predicted_transfer_s=float(decisions.predicted_transfer_s.mean()),
                mean_measured_load_s=float(decisions.measured_load_s.dropna().mean())
                if decisions.measured_load_s.notna().any()
                else float("nan"),
            )
        for e in engines.values():
            e.close()
    run_dir = write_experiment(
        results_root, "kv_tier_path", {"preset": preset, **p}, metrics, {"decisions": decisions}
    )
    return ExperimentRun(run_dir, metrics, {"decisions": decisions})
