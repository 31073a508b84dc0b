"""The online policy experiment: pool sizing arithmetic, a tiny concurrent run through the
benchmark runner, fair interleaving of the engines."""

import json

import pytest

from sagellm.benchmarks.workloads import WorkloadRequest, build_workload
from sagellm.cli import main
from sagellm.experiments.kv_policy_online import (
    PRESETS,
    distinct_blocks,
    online_workload,
    pool_blocks,
    run_online_policies,
)


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


def test_tiny_run_serves_concurrently_and_writes_per_policy_metrics(tmp_path):
    # sessions start (almost) together: their turns are batched in the same engine steps
    over = dict(num_sessions=2, turns_per_session=2, session_rate_per_s=1e6)
    run = run_online_policies(["lru", "s3fifo"], "ci", tmp_path, **over)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert run.run_dir.parent.name == "kv_policy_online"
    assert metrics["num_requests"] == metrics["num_completed"] == 2 * 4
    for pol in ("lru", "s3fifo"):
        assert 0.0 < metrics[f"{pol}_kv_hit_rate"] < 1.0  # later turns reuse the history
        assert 0.0 < metrics[f"{pol}_ttft_p50_s"] <= metrics[f"{pol}_ttft_p95_s"]
    assert list(run.summary.policy) == ["lru", "s3fifo"]
    assert (run.summary.mean_num_seqs > 1.0).all()  # concurrent, not one request at a time
    # the runner's arrival process: requests submitted at the workload's arrival offsets
    p = {**PRESETS["ci"], **over}
    want = sorted(r.arrival_offset_s for r in build_workload(online_workload(p, 0), 512))
    for pol in ("lru", "s3fifo"):
        got = sorted(run.requests[run.requests.policy == pol].arrival_s)
        assert got == pytest.approx([w - want[0] for w in want], abs=1e-9)
    # every request ran on both engines
    assert (run.requests.groupby("request_id").policy.nunique() == 2).all()
    # the run-folder contract: config, env, chart and a report `sagellm report` can rewrite
    files = {p.name for p in run.run_dir.iterdir()}
    assert {"config.yaml", "env.json", "run.json", "policies.png", "report.md"} <= files
    (run.run_dir / "report.md").unlink()
    assert main(["report", str(run.run_dir)]) == 0
    report = (run.run_dir / "report.md").read_text()
    assert "kind: kv_policy_online" in report and "| lru_kv_hit_rate |" in report
    assert "![policies.png](policies.png)" in report


def test_engines_step_in_rotated_rounds(tmp_path):
    run = run_online_policies(["lru", "arc", "sieve"], "ci", tmp_path, num_sessions=2)
    r = run.rounds
    full = r.groupby("round").policy.transform("nunique") == 3
    # while all three run, each steps once per round and each goes first equally often (+-1)
    assert (r[full].groupby("round").policy.nunique() == r[full].groupby("round").size()).all()
    firsts = r[full & (r.position == 0)].policy.value_counts()
    assert set(firsts.index) == {"lru", "arc", "sieve"} and firsts.max() - firsts.min() <= 1


def test_unknown_policy_lists_known_ones(tmp_path):
    with pytest.raises(ValueError, match="known: arc, cost_aware"):
        run_online_policies(["lru", "belady"], "ci", tmp_path)
