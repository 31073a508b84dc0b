from pathlib import Path

import pytest

from sagellm.benchmarks.workloads import TraceFormatError, read_mooncake_trace

GOOD = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n'
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "traces"


def test_parses_records(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text(GOOD + "\n" + GOOD.replace('"timestamp": 0', '"timestamp": 12.5'))
    tr = read_mooncake_trace(p)
    assert [r.timestamp_ms for r in tr.records] == [0.0, 12.5]
    assert tr.records[0].hash_ids == (0, 1) and tr.num_bad_lines == 0


@pytest.mark.parametrize(
    "line, msg",
    [
        ("{not json", "Expecting property name"),
        ('{"timestamp": 0, "input_length": 1, "output_length": 1}', "missing field 'hash_ids'"),
        ('{"timestamp": -1, "input_length": 1, "output_length": 1, "hash_ids": []}', "timestamp"),
        ('{"timestamp": 0, "input_length": "x", "output_length": 1, "hash_ids": []}', "input_len"),
        ('{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1.5]}', "hash_ids"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_malformed_line_names_line_number(tmp_path, line, msg):
    p = tmp_path / "t.jsonl"
    p.write_text(GOOD + GOOD + line + "\n" + GOOD)
    with pytest.raises(TraceFormatError, match=rf"t\.jsonl:3: .*{msg}"):
        read_mooncake_trace(p)
    tr = read_mooncake_trace(p, skip_bad=True)
    assert len(tr.records) == 3 and tr.num_bad_lines == 1


def test_missing_file(tmp_path):
    with pytest.raises(TraceFormatError, match="cannot open trace"):
        read_mooncake_trace(tmp_path / "nope.jsonl")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared traces not present")
def test_real_traces_parse():
    tr = read_mooncake_trace(SHARED / "mooncake_synthetic_trace.jsonl", max_records=500)
    assert len(tr.records) == 500 and tr.num_bad_lines == 0
