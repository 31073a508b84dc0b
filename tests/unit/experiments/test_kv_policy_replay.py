"""The replay command, the Mooncake trace adapter and the sweep's results folder."""

import json

import pytest

from sagellm.benchmarks.workloads.mooncake import TraceFormatError
from sagellm.experiments.kv_policy_replay import load_mooncake_blocks, main
from sagellm.experiments.kv_policy_sweep import run_policy_sweep
from sagellm.kv_policy.traces import zipf_trace

LINE = '{{"timestamp": {t}, "input_length": 1024, "output_length": 1, "hash_ids": {ids}}}\n'


def _trace_file(tmp_path, bad=False):
    p = tmp_path / "mini.jsonl"
    lines = [LINE.format(t=i, ids=[0, 1 + i % 3, 10 + i % 5]) for i in range(40)]
    if bad:
        lines.insert(3, '{"timestamp": 1}\n')
    p.write_text("".join(lines))
    return p


def test_cli_on_mooncake_format_file(tmp_path, capsys):
    p = _trace_file(tmp_path)
    rc = main(["--trace", str(p), "--policies", "lru,s3fifo", "--capacities", "4,20",
               "--results-root", str(tmp_path / "res")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "s3fifo" in out and "results:" in out
    (run_dir,) = (tmp_path / "res" / "kv_policy").iterdir()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["num_requests"] == m["num_completed"] == 40
    assert m["max_abs_diff_vs_libcachesim_pp"] == 0.0  # s3fifo at 4 blocks: no oracle (NaN)
    assert (run_dir / "miss_ratio_curve.png").exists()


def test_cli_bad_inputs(tmp_path, capsys):
    p = _trace_file(tmp_path, bad=True)
    assert main(["--trace", str(p), "--results-root", str(tmp_path)]) == 2
    assert "mini.jsonl:4: missing field 'input_length'" in capsys.readouterr().err
    args = ["--trace", str(p), "--skip-bad", "--capacities", "4", "--policies", "lru"]
    rc = main([*args, "--no-libcachesim", "--modes", "object", "--results-root", str(tmp_path)])
    assert rc == 0 and "1 bad lines skipped" in capsys.readouterr().out
    assert main(["--synthetic", "zipf", "--capacities", "0"]) == 2
    assert "capacity_blocks must be >= 1" in capsys.readouterr().err
    assert main(["--synthetic", "zipf", "--policies", "lru,bogus"]) == 2
    assert "known: arc, cost_aware, lfu, lru, s3fifo, sieve" in capsys.readouterr().err


def test_sweep_delta_vs_lru(tmp_path):
    run = run_policy_sweep(zipf_trace(300, seed=4), ["lru", "sieve"], [50], modes=["object"],
                           compare_libcachesim=False, results_root=tmp_path)  # fmt: skip
    t = run.table.set_index("policy")
    assert t.loc["lru", "hit_ratio_delta_vs_lru"] == 0.0
    assert (
        t.loc["sieve", "hit_ratio_delta_vs_lru"]
        == t.loc["sieve", "hit_ratio"] - t.loc["lru", "hit_ratio"]
    )
    assert set(run.latency.op) == {"on_access", "on_miss", "on_insert", "select_victims"}


def test_synthetic_traces_are_reproducible(tmp_path):
    assert zipf_trace(50, seed=3).requests == zipf_trace(50, seed=3).requests
    assert zipf_trace(50, seed=3).requests != zipf_trace(50, seed=4).requests
    assert load_mooncake_blocks(_trace_file(tmp_path), max_records=5).requests[0] == (0, 1, 10)


def test_speed_comparison_runs(tmp_path, capsys):
    rc = main(["--synthetic", "zipf", "--num-requests", "200", "--policies", "lru",
               "--capacities", "50", "--modes", "object", "--speed-repeats", "1",
               "--results-root", str(tmp_path)])  # fmt: skip
    assert rc == 0 and "speed lru @50: ours" in capsys.readouterr().out


def test_malformed_trace_line(tmp_path):
    p = tmp_path / "t.jsonl"
    good = '{"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1, 2]}\n'
    p.write_text(good + "{not json\n" + good)
    with pytest.raises(TraceFormatError, match=r"t\.jsonl:2:"):
        load_mooncake_blocks(p)
    t = load_mooncake_blocks(p, skip_bad=True)
    assert t.num_bad_lines == 1
    assert t.requests == [(1, 2), (1, 2)]
    assert t.timestamps_s == [0.0, 0.0]
