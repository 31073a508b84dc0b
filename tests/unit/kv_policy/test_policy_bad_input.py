"""Bad input: unknown policy names list the known ones; a capacity of 0 names its field;
malformed trace lines name their line number or are skipped and counted."""

import pytest

from sagellm.benchmarks.workloads.mooncake import TraceFormatError
from sagellm.kv_policy import make_eviction_policy
from sagellm.kv_policy.traces import load_mooncake_blocks


def test_unknown_policy_lists_known():
    with pytest.raises(ValueError, match=r"unknown kv_policy 'lruu'; known: arc, cost_aware, lfu"):
        make_eviction_policy("lruu", 10)


@pytest.mark.parametrize("cap", [0, -3, 2.5, None, True])
def test_bad_capacity_names_field(cap):
    with pytest.raises(ValueError, match="capacity_blocks"):
        make_eviction_policy("lru", cap)


def test_s3fifo_parameters_are_checked():
    with pytest.raises(ValueError, match="small_ratio"):
        make_eviction_policy("s3fifo", 10, small_ratio=1.5)


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
