"""The online policy benchmark: pool sizing arithmetic and a tiny interleaved run."""

import json

import pytest

from sagellm.benchmarks.workloads.generate import WorkloadRequest
from sagellm.experiments.kv_policy_online import distinct_blocks, pool_blocks, run_online_policies


def test_distinct_blocks_counts_shared_prefixes_once():
    # block size 2: [1,2] shared; [1,2,3,4] and [1,2,5,6] differ; trailing partial ignored
    assert distinct_blocks([[1, 2, 3, 4], [1, 2, 5, 6, 7], [1, 2]], 2) == 3


def test_pool_is_a_fraction_but_fits_the_longest_request():
    reqs = [WorkloadRequest(f"r{i}", 0.0, list(range(i * 10, i * 10 + 8)), 2) for i in range(5)]
    # 5 x 4 distinct blocks = 20; half = 10; the longest request needs ceil(10/2) = 5 (+1)
    assert pool_blocks(reqs, 2, 0.5) == 10
    assert pool_blocks(reqs, 2, 0.1) == 6
    with pytest.raises(ValueError, match="cache_fraction"):
        pool_blocks(reqs, 2, 0.0)


def test_tiny_run_writes_per_policy_metrics(tmp_path):
    run = run_online_policies(
        ["lru", "s3fifo"], "ci", tmp_path, num_sessions=2, turns_per_session=2
    )
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert run.run_dir.parent.name == "kv_policy_online"
    assert metrics["num_requests"] == metrics["num_completed"] == 2 * 4
    for pol in ("lru", "s3fifo"):
        assert 0.0 < metrics[f"{pol}_kv_hit_rate"] < 1.0  # later turns reuse the history
        assert 0.0 < metrics[f"{pol}_ttft_p50_s"] <= metrics[f"{pol}_ttft_p95_s"]
    assert list(run.summary.policy) == ["lru", "s3fifo"]
    # interleaved: every request ran on both engines, each policy first once per 2 requests
    assert (run.requests.groupby("request_id").policy.nunique() == 2).all()
    assert sorted(run.requests[run.requests.order == 0].policy) == [
        "lru",
        "lru",
        "s3fifo",
        "s3fifo",
    ]


def test_unknown_policy_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="known: arc, cost_aware"):
        run_online_policies(["lru", "belady"], "ci", tmp_path)
