"""Charts of the online eviction-policy run (:mod:`sagellm.experiments.kv_policy_online`):
per policy, TTFT p50/p95 (seconds) beside the KV hit rate (reused prompt tokens / prompt
tokens), one bar per policy in each panel."""

from __future__ import annotations


def online_policy_chart(summary):
    """An altair chart of the ``summary`` table (one row per policy)."""
    import altair as alt

    ttft = summary.melt(
        id_vars=["policy"], value_vars=["ttft_p50_s", "ttft_p95_s"], var_name="quantile"
    )
    left = (
        alt.Chart(ttft, title="TTFT per policy")
        .mark_bar()
        .encode(
            x=alt.X("policy:N", title=None),
            xOffset="quantile:N",
            y=alt.Y("value:Q", title="TTFT (s)"),
            color=alt.Color("quantile:N", title=None),
            tooltip=["policy", "quantile", "value"],
        )
    )
    right = (
        alt.Chart(summary, title="KV hit rate per policy")
        .mark_bar()
        .encode(
            x=alt.X("policy:N", title=None),
            y=alt.Y("kv_hit_rate:Q", title="KV hit rate", scale=alt.Scale(domain=[0, 1])),
            tooltip=["policy", "kv_hit_rate", "num_preemptions"],
        )
    )
    return alt.hconcat(left, right)
