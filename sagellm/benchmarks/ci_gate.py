"""The performance gate: compare a current run's metrics with a committed baseline.

Thresholds (the plan's), on metrics that are noise-aware by construction:

- ``mfu`` >= baseline - 0.01 (one percentage point); MFU uses a peak measured in the same run;
- TTFT and TPOT p50/p95 at most 5% worse, compared as ``*_norm`` metrics: latency divided by
  a fixed calibration workload timed in the same run, so a slower or busier machine moves
  both and the ratio stays put;
- ``kv_hit_rate`` not lower; ``comm_share`` not higher (both deterministic);
- ``cost_device_s_per_token_norm`` not higher beyond the same 5% noise band (it is a time).

Each side is the median over the preset's repeats. Exit status 1 on any regression.

    python -m sagellm.benchmarks.ci_gate --baseline results/baseline/ci.json --current RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class GateRow:
    metric: str
    baseline: float | None
    current: float | None
    rule: str
    ok: bool


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


def compare(baseline: dict, current: dict) -> list[GateRow]:
    """One row per rule; ``ok`` False marks a regression."""
    return [
        GateRow(
            r.metric,
            baseline.get(r.metric),
            current.get(r.metric),
            r.label,
            _check(r, baseline.get(r.metric), current.get(r.metric)),
        )
        for r in RULES
    ]


def format_table(rows: list[GateRow]) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.6g}"

    lines = [f"{'metric':<32} {'baseline':>12} {'current':>12} {'change':>9}  {'rule':<20} result"]
    for r in rows:
        change = (
            f"{(r.current - r.baseline) / r.baseline:+.1%}"
            if r.baseline and r.current is not None
            else ""
        )
        lines.append(
            f"{r.metric:<32} {f(r.baseline):>12} {f(r.current):>12} {change:>9}  "
            f"{r.rule:<20} {'PASS' if r.ok else 'FAIL'}"
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
