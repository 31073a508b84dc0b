"""What ``notebooks/90_perf_report.ipynb`` calls: run a load sweep, read run folders back, and
build the report's tables and charts (TTFT/TPOT CDFs, throughput vs load, the gate table)."""

from __future__ import annotations

import json
from pathlib import Path

from sagellm.benchmarks.ci_gate import compare
from sagellm.benchmarks.config import BenchmarkConfig, load_benchmark_config
from sagellm.benchmarks.runner import BenchmarkRunner


def run_load_sweep(
    preset: str,
    rates_per_s: list[float],
    results_root: str | Path,
    experiment: str,
    num_requests: int | None = None,
) -> list[Path]:
    """Run ``preset`` in arrival mode at each Poisson rate (one engine for all points)."""
    from sagellm.engines import create_engine

    base = load_benchmark_config(preset)
    engine = create_engine(base.engine)
    dirs = []
    for rate in rates_per_s:
        wl = base.workload.model_copy(
            update={
                "arrival": base.workload.arrival.model_copy(
                    update={"process": "poisson", "rate_per_s": rate}
                ),
                **({"num_requests": num_requests} if num_requests else {}),
            }
        )
        cfg = BenchmarkConfig.model_validate(
            {
                **base.model_dump(),
                "experiment": experiment,
                "mode": "arrival",
                "max_concurrency": None,
                "repeats": 1,
                "workload": wl.model_dump(),
            }
        )
        res = BenchmarkRunner(engine, progress=False).run(cfg, results_root=results_root)
        dirs.append(res.run_dir)
    return dirs


def load_runs(results_root: str | Path, experiment: str):
    """(metrics table, per-request table) of every run folder of ``experiment``."""
    import pandas as pd
    import yaml

    rows, reqs = [], []
    for d in sorted((Path(results_root) / experiment).glob("*/metrics.json")):
        run = d.parent
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        m = json.loads(d.read_text())
        rate = cfg["workload"]["arrival"]["rate_per_s"]
        rows.append({"run_id": run.name, "rate_per_s": rate, **m})
        r = pd.read_parquet(run / "requests.parquet")
        r["run_id"], r["rate_per_s"] = run.name, rate
        reqs.append(r)
    metrics = pd.DataFrame(rows)
    requests = pd.concat(reqs, ignore_index=True) if reqs else pd.DataFrame()
    if len(requests):
        requests["ttft_s"] = requests["first_token_s"] - requests["arrival_s"]
        n = requests["num_output_tokens"]
        requests["tpot_s"] = (requests["finished_s"] - requests["first_token_s"]) / (n - 1)
        requests.loc[n <= 1, "tpot_s"] = None
    return metrics, requests


def cdf_chart(requests, column: str, title: str):
    import altair as alt

    df = requests.dropna(subset=[column])[["rate_per_s", column]].sort_values(column).copy()
    grp = df.groupby("rate_per_s")[column]
    df["fraction"] = grp.cumcount().add(1) / grp.transform("count")
    return (
        alt.Chart(df, title=title)
        .mark_line(interpolate="step-after")
        .encode(x=f"{column}:Q", y="fraction:Q", color="rate_per_s:N")
    )


def throughput_chart(metrics):
    import altair as alt

    return (
        alt.Chart(metrics, title="Throughput vs offered load")
        .mark_line(point=True)
        .encode(x="rate_per_s:Q", y="output_throughput_tok_per_s:Q")
    )


def gate_table(baseline: dict, current: dict):
    """Stored-run comparison (``*_norm`` metrics, two runs made at different times)."""
    import pandas as pd

    return pd.DataFrame([r.__dict__ for r in compare(baseline, current)])


def latest_gate_table(results_root: str | Path, baseline: str | Path, experiment: str = "ci"):
    """The newest lockstep gate verdict under ``results_root/gate`` (what ``sagellm gate``
    wrote); without one, the newest ``experiment`` run read against ``baseline``'s stored
    numbers (marked as a cross-run reading); a one-row note when neither exists."""
    import pandas as pd

    gates = sorted((Path(results_root) / "gate").glob("*/gate.json"))
    if gates:
        g = json.loads(gates[-1].read_text())
        df = pd.DataFrame(g["rows"])
        df.insert(0, "source", f"lockstep gate {gates[-1].parent.name}")
        return df
    runs = sorted((Path(results_root) / experiment).glob("*/metrics.json"))
    if not runs or not Path(baseline).exists():
        return pd.DataFrame(
            {
                "note": [
                    f"no gate run under {results_root}/gate, no {experiment} run or no "
                    f"baseline at {baseline}; run `sagellm gate` first"
                ]
            }
        )
    df = gate_table(json.loads(Path(baseline).read_text()), json.loads(runs[-1].read_text()))
    df.insert(0, "source", f"cross-run reading of {runs[-1].parent.name} (not a verdict)")
    return df
