"""The TTFT CDF of a benchmark run, readable at any number of repeats.

Up to :data:`MAX_REPEAT_LINES` repeats: one step line per repeat, each its own colour of a
10-colour palette (so every line is distinguishable). More repeats: a summary instead of a
tangle of lines: at each cumulative fraction q (1/Q .. 1) the median over repeats of the
repeat's q-quantile TTFT as the line, and the band between the fastest and the slowest
repeat's q-quantile. TTFT = first token - arrival, seconds.
"""

from __future__ import annotations

MAX_REPEAT_LINES = 8
NUM_QUANTILES = 50


def _ttft(requests):
    df = requests.dropna(subset=["first_token_s"]).copy()
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    return df


def ttft_cdf_chart(requests):
    """An altair chart of ``requests`` (a requests.parquet frame: repeat, arrival_s,
    first_token_s)."""
    import altair as alt
    import numpy as np
    import pandas as pd

    df = _ttft(requests)
    repeats = sorted(df["repeat"].unique())
    if len(repeats) <= MAX_REPEAT_LINES:
        df = df.sort_values("ttft_s")
        by = df.groupby("repeat")
        df["fraction"] = (by.cumcount() + 1) / by["ttft_s"].transform("count")
        return (
            alt.Chart(df, title="TTFT CDF per repeat")
            .mark_line(interpolate="step-after")
            .encode(
                x=alt.X("ttft_s:Q", title="TTFT (s)"),
                y=alt.Y("fraction:Q", title="fraction of requests"),
                color=alt.Color("repeat:N", scale=alt.Scale(scheme="category10")),
            )
        )
    qs = np.arange(1, NUM_QUANTILES + 1) / NUM_QUANTILES
    per = np.array([np.quantile(g["ttft_s"].to_numpy(), qs) for _, g in df.groupby("repeat")])
    summary = pd.DataFrame(
        {
            "fraction": qs,
            "min_s": per.min(axis=0),
            "median_s": np.median(per, axis=0),
            "max_s": per.max(axis=0),
        }
    )
    base = alt.Chart(summary)
    band = base.mark_area(orient="horizontal", opacity=0.3).encode(
        x=alt.X("min_s:Q", title="TTFT (s)"),
        x2="max_s:Q",
        y=alt.Y("fraction:Q", title="fraction of requests"),
    )
    line = base.mark_line().encode(x="median_s:Q", y="fraction:Q")
    title = f"TTFT CDF: median of {len(repeats)} repeats, band min-max"
    return (band + line).properties(title=title)
