"""The performance gate's rules and tables.

Thresholds (the plan's):

- ``mfu`` >= baseline - 0.01 (one percentage point);
- TTFT and TPOT p50/p95 at most 5% worse;
- ``kv_hit_rate`` not lower; ``comm_share`` not higher (both deterministic);
- cost per token (device-seconds per output token) not higher beyond the same 5% band: it is
  a time and cannot be held to "not higher" exactly.

Two ways to apply them:

- :func:`compare_paired` (what ``sagellm gate`` and ``make test`` use): baseline and current
  ran in lockstep in the same run (:mod:`sagellm.benchmarks.gate_run`), repeat r of each side
  next to the other's. Each rule is applied to the median over repeats of the per-repeat
  change (current/baseline for times, current - baseline for MFU); it fails when that change
  passes the threshold and its bootstrap 95% interval excludes zero (printed beside it).
- :func:`compare` (stored runs, ``python -m sagellm.benchmarks.ci_gate --baseline B --current
  C``): medians of two runs made at different times, latencies divided by a calibration
  workload timed in each run (``*_norm``). On a shared CPU whose speed drifts by 10-40% from
  minute to minute this false-alarms often; use it to read stored runs, not to gate.

Exit status 1 on any regression.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

LATENCY_TOLERANCE = 0.05
MFU_TOLERANCE = 0.01
EXACT_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Rule:
    metric: str
    kind: str  # "max_rel" (lower is better), "min_abs", "min_exact", "max_exact"
    tolerance: float
    label: str


RULES = (
    Rule("mfu", "min_abs", MFU_TOLERANCE, ">= baseline - 0.01"),
    Rule("p50_ttft_s_norm", "max_rel", LATENCY_TOLERANCE, "<= baseline * 1.05"),
    Rule("p95_ttft_s_norm", "max_rel", LATENCY_TOLERANCE, "<= baseline * 1.05"),
    Rule("p50_tpot_s_norm", "max_rel", LATENCY_TOLERANCE, "<= baseline * 1.05"),
    Rule("p95_tpot_s_norm", "max_rel", LATENCY_TOLERANCE, "<= baseline * 1.05"),
    Rule("kv_hit_rate", "min_exact", EXACT_TOLERANCE, ">= baseline"),
    Rule("comm_share", "max_exact", EXACT_TOLERANCE, "<= baseline"),
    Rule("cost_device_s_per_token_norm", "max_rel", LATENCY_TOLERANCE, "<= baseline * 1.05"),
)


# the same thresholds on raw metrics: in a lockstep run both sides share the machine's mood
PAIRED_RULES = tuple(replace(r, metric=r.metric.removesuffix("_norm")) for r in RULES)
BOOTSTRAP_DRAWS = 2000


@dataclass(frozen=True)
class GateRow:
    """``baseline``/``current``: the metric's value (median over repeats). ``change``: the
    relative change (or, for MFU, the difference) the rule judged; ``low``/``high``: its
    bootstrap 95% interval (paired comparisons only)."""

    metric: str
    baseline: float | None
    current: float | None
    rule: str
    ok: bool
    change: float | None = None
    low: float | None = None
    high: float | None = None


def _check(rule: Rule, base: float | None, cur: float | None) -> bool:
    if base is None:
        return True  # nothing to hold the current run to
    if cur is None:
        return rule.kind in ("max_exact",)  # e.g. comm share absent = no communication
    if rule.kind == "max_rel":
        return cur <= base * (1 + rule.tolerance)
    if rule.kind == "min_abs":
        return cur >= base - rule.tolerance
    if rule.kind == "min_exact":
        return cur >= base - rule.tolerance
    return cur <= base + rule.tolerance


def _change(rule: Rule, base: float | None, cur: float | None) -> float | None:
    if base is None or cur is None:
        return None
    if rule.kind == "max_rel":
        return cur / base - 1.0 if base else None
    return cur - base


def compare(baseline: dict, current: dict) -> list[GateRow]:
    """Stored runs: one row per rule on the ``*_norm`` metrics; ``ok`` False is a regression."""
    rows = []
    for r in RULES:
        b, c = baseline.get(r.metric), current.get(r.metric)
        rows.append(GateRow(r.metric, b, c, r.label, _check(r, b, c), _change(r, b, c)))
    return rows


def _paired_stat(rule: Rule, pairs: list[tuple[float, float]]) -> float:
    """The median per-repeat change: current/baseline - 1 for times, current - baseline
    otherwise."""
    if rule.kind == "max_rel":
        return statistics.median(c / b for b, c in pairs) - 1.0
    return statistics.median(c - b for b, c in pairs)


def compare_paired(
    baseline: Sequence[dict], current: Sequence[dict], seed: int = 0
) -> list[GateRow]:
    """Lockstep runs: ``baseline[r]`` and ``current[r]`` are repeat r of each side, measured
    side by side. A timing rule fails when the median per-repeat change passes its threshold
    and its bootstrap 95% interval lies wholly on the worse side of zero (a change the noise
    cannot explain); the deterministic ones compare medians exactly."""
    if len(baseline) != len(current) or not baseline:
        raise ValueError(
            f"repeats: need the same number of repeats on both sides, got {len(baseline)} "
            f"baseline and {len(current)} current"
        )
    rng = random.Random(seed)
    rows = []
    for r in PAIRED_RULES:
        pairs = [
            (b[r.metric], c[r.metric])
            for b, c in zip(baseline, current, strict=True)
            if b.get(r.metric) is not None and c.get(r.metric) is not None
        ]
        bvals = [b.get(r.metric) for b in baseline if b.get(r.metric) is not None]
        cvals = [c.get(r.metric) for c in current if c.get(r.metric) is not None]
        bmed = statistics.median(bvals) if bvals else None
        cmed = statistics.median(cvals) if cvals else None
        if r.kind in ("min_exact", "max_exact") or not pairs:
            rows.append(GateRow(r.metric, bmed, cmed, r.label, _check(r, bmed, cmed)))
            continue
        if r.kind == "max_rel" and any(b <= 0 for b, _ in pairs):
            raise ValueError(f"{r.metric}: baseline values must be > 0 to form ratios")
        stat = _paired_stat(r, pairs)
        draws = sorted(
            _paired_stat(r, [rng.choice(pairs) for _ in pairs]) for _ in range(BOOTSTRAP_DRAWS)
        )
        low, high = draws[int(0.025 * BOOTSTRAP_DRAWS)], draws[int(0.975 * BOOTSTRAP_DRAWS) - 1]
        # a regression: past the threshold, and the interval excludes "no change"
        if r.kind == "max_rel":
            ok = not (stat > r.tolerance and low > 0.0)
        else:
            ok = not (stat < -r.tolerance and high < 0.0)
        rows.append(GateRow(r.metric, bmed, cmed, r.label, ok, stat, low, high))
    return rows


def format_table(rows: list[GateRow]) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.6g}"

    def ch(r: GateRow, v: float | None) -> str:
        if v is None:
            return ""
        return f"{v:+.1%}" if r.rule.startswith("<= baseline *") else f"{v:+.4f}"

    head = f"{'metric':<30} {'baseline':>11} {'current':>11} {'change':>8} {'95% interval':>19}"
    lines = [f"{head}  {'rule':<20} result"]
    for r in rows:
        interval = f"[{ch(r, r.low)}, {ch(r, r.high)}]" if r.low is not None else ""
        lines.append(
            f"{r.metric:<30} {f(r.baseline):>11} {f(r.current):>11} {ch(r, r.change):>8} "
            f"{interval:>19}  {r.rule:<20} {'PASS' if r.ok else 'FAIL'}"
        )
    return "\n".join(lines)


def load_metrics(path: str | Path) -> dict:
    """A metrics.json file, or a run folder holding one."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise SystemExit(f"ci_gate: no metrics at {p}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ci_gate", description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--current", required=True)
    args = ap.parse_args(argv)
    rows = compare(load_metrics(args.baseline), load_metrics(args.current))
    print(format_table(rows))
    failed = [r.metric for r in rows if not r.ok]
    print("gate: FAIL (" + ", ".join(failed) + ")" if failed else "gate: PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
