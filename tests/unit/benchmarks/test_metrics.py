"""Metric definitions against hand-computed values (vLLM bench-serve semantics)."""

import pytest

from sagellm.benchmarks.metrics import SLOTargets, compute_metrics, percentile
from sagellm.core.types import RequestMetrics, StepMetrics


def req(rid, arrival, first, times, finished, n_prompt=10, reason="length", cached=0):
    return RequestMetrics(
        rid,
        arrival,
        n_prompt,
        scheduled_s=arrival,
        first_token_s=first,
        token_times_s=times,
        finished_s=finished,
        num_cached_tokens=cached,
        num_output_tokens=len(times),
        finish_reason=reason,
    )


def step(i, compute, flops=0.0, comm=0.0):
    return StepMetrics(i, 0.0, 1, 1, 0, 1, 0.0, compute, 0.0, comm_s=comm, flops=flops)


def test_hand_computed_example():
    reqs = [
        # 3 tokens: ttft 1.0, tpot (4 - 1) / 2 = 1.5, itl [1, 2]
        req("a", 0.0, 1.0, [1.0, 2.0, 4.0], 4.0, n_prompt=10, cached=4),
        # 1 token: ttft 0.5, no tpot, no itl
        req("b", 1.0, 1.5, [1.5], 1.5, n_prompt=30),
        # aborted after one token: excluded from everything but counts
        req("c", 0.5, 2.0, [2.0], 2.5, reason="abort"),
        # never got a first token (failed)
        req("d", 0.5, None, [], 3.0, reason="error"),
    ]
    steps = [step(0, 1.0, flops=8.0, comm=0.25), step(1, 1.0, flops=8.0, comm=0.25)]
    m = compute_metrics(
        reqs, steps, SLOTargets(ttft_s=0.8), peak_flops_per_s=2.0, price_per_device_hour=3600.0
    )
    assert m["num_requests"] == 4 and m["num_completed"] == 2
    assert m["num_aborted"] == 1 and m["num_failed"] == 1
    assert m["duration_s"] == 4.0  # first arrival 0.0 -> last completion 4.0
    assert m["mean_ttft_s"] == pytest.approx(0.75)
    assert m["median_ttft_s"] == pytest.approx(0.75)
    assert m["mean_tpot_s"] == pytest.approx(1.5)
    assert m["p99_tpot_s"] == pytest.approx(1.5)
    assert m["mean_itl_s"] == pytest.approx(1.5)
    assert m["mean_e2el_s"] == pytest.approx((4.0 + 0.5) / 2)
    assert m["total_output_tokens"] == 4
    assert m["output_throughput_tok_per_s"] == pytest.approx(1.0)
    assert m["request_throughput_per_s"] == pytest.approx(0.5)
    assert m["goodput_req_per_s"] == pytest.approx(0.25)  # only b meets TTFT <= 0.8
    assert m["slo_attainment"] == pytest.approx(0.5)
    assert m["kv_hit_rate"] == pytest.approx(4 / 40)
    assert m["mfu"] == pytest.approx(16.0 / (4.0 * 2.0))
    assert m["comm_share"] == pytest.approx(0.25)
    assert m["cost_device_s_per_token"] == pytest.approx(1.0)
    assert m["cost_per_token"] == pytest.approx(1.0)


def test_nothing_completed():
    m = compute_metrics([req("x", 0.0, None, [], 1.0, reason="abort")], [])
    assert m["num_completed"] == 0 and m["duration_s"] == 0.0
    assert m["mean_ttft_s"] is None and m["output_throughput_tok_per_s"] is None
    assert m["mfu"] is None and m["kv_hit_rate"] is None


def test_percentile_interpolates_like_numpy():
    xs = [1.0, 2.0, 3.0, 4.0]
    assert percentile(xs, 50) == 2.5
    assert percentile(xs, 90) == pytest.approx(3.7)
    assert percentile([], 50) is None


def test_rejected_requests_count_and_are_never_good():
    reqs = [
        req("a", 0.0, 0.5, [0.5], 1.0),  # meets TTFT <= 0.8
        RequestMetrics("r", 0.2, 10, finished_s=0.2, finish_reason="rejected"),
    ]
    m = compute_metrics(reqs, [], SLOTargets(ttft_s=0.8))
    assert m["num_requests"] == 2 and m["num_completed"] == 1
    assert m["num_rejected_requests"] == 1 and m["num_failed"] == 0
    assert m["slo_attainment"] == pytest.approx(0.5)
    assert m["goodput_req_per_s"] == pytest.approx(1.0)  # 1 good over 1 s
    assert m["mean_e2el_s"] == pytest.approx(1.0)  # the rejected one is in no latency
    only = compute_metrics(reqs[1:], [], SLOTargets(ttft_s=0.8))
    assert only["slo_attainment"] == 0.0 and only["goodput_req_per_s"] is None
