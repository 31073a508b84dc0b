"""The peer benchmark's one table: long rows (workload, dtype, engine, metric, value) in, a
wide Markdown table out, with native / peer ratios of every metric.

A ratio is ``native / peer`` whatever the metric's direction: above 1 means native is faster
for tok/s and MFU, slower for wall seconds and TPOT, bigger for RSS. A missing value (a peer
skipped, n/a, or a metric that does not apply) gives an empty cell, never 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

MEMORY = ("peak_rss_bytes", "weights_plus_kv_pool_bytes")
#: the metrics the Markdown shows per workload (all are kept in the parquet table)
SHOWN: dict[str, tuple[str, ...]] = {
    "w1": ("output_tok_per_s", "mfu", "token_agreement_vs_native", *MEMORY),
    "w2": ("wall_s", "mean_tpot_ms", *MEMORY),
    "w3": (
        "decode_tok_per_s",
        "decode_read_bytes_per_s",
        "read_bytes_per_s",
        "roofline_fraction",
        *MEMORY,
    ),
}
Row = dict[str, object]


def long_rows(workload: str, dtype: str, engine: str, metrics: Mapping[str, float | None]):
    """One row per metric of a cell."""
    return [
        {"workload": workload, "dtype": dtype, "engine": engine, "metric": k, "value": v}
        for k, v in metrics.items()
    ]


def ratio(native: float | None, peer: float | None) -> float | None:
    """``native / peer``; None when either is missing or the peer is 0."""
    if native is None or peer is None or peer == 0:
        return None
    return native / peer


def wide_rows(rows: Iterable[Row], peers: tuple[str, ...]) -> list[dict[str, object]]:
    """(workload, metric, dtype) rows with one column per engine and a ``native/<peer>`` ratio
    per peer, in SHOWN order, fp32 before bf16."""
    val: dict[tuple, float | None] = {}
    keys: list[tuple[str, str, str]] = []
    for r in rows:
        val[(r["workload"], r["dtype"], r["engine"], r["metric"])] = r["value"]
        k = (r["workload"], r["metric"], r["dtype"])
        if r["metric"] in SHOWN.get(str(r["workload"]), ()) and k not in keys:
            keys.append(k)
    dtype_rank = {"float32": 0, "bfloat16": 1}

    def order(k: tuple[str, str, str]) -> tuple:
        return (k[0], SHOWN[k[0]].index(k[1]), dtype_rank.get(k[2], 2))

    out = []
    for w, m, d in sorted(keys, key=order):
        native = val.get((w, d, "native", m))
        row: dict[str, object] = {"workload": w, "metric": m, "dtype": d, "native": native}
        for p in peers:
            row[p] = val.get((w, d, p, m))
        for p in peers:
            row[f"native/{p}"] = ratio(native, row[p])  # type: ignore[arg-type]
        out.append(row)
    return out


def _fmt(v: object, metric: str = "") -> str:
    if v is None:
        return "–"
    if metric.endswith("_bytes") and isinstance(v, int | float):
        return f"{v / 2**20:,.0f} MiB"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def markdown(
    rows: list[Row], peers: tuple[str, ...], machine: Mapping[str, float], notes: list[str]
) -> str:
    """The table, the machine's measured limits above it, notes (skips, n/a) below."""
    wide = wide_rows(rows, peers)
    engines = ("native", *peers)
    cols = ["workload", "metric", "dtype", *engines, *(f"native/{p}" for p in peers)]
    lines = [
        "measured in this run: "
        + ", ".join(f"{k} {_fmt(v / 1e9)}e9" for k, v in sorted(machine.items())),
        "",
        "| " + " | ".join(cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for r in wide:
        unit = str(r["metric"])
        cells = (_fmt(r[c], unit if c in engines else "") for c in cols)
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"
