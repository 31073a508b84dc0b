import json

import pytest

from sagellm.benchmarks.ci_gate import compare, main

BASE = {
    "mfu": 0.30,
    "p50_ttft_s_norm": 10.0,
    "p95_ttft_s_norm": 20.0,
    "p50_tpot_s_norm": 1.0,
    "p95_tpot_s_norm": 2.0,
    "kv_hit_rate": 0.5,
    "comm_share": 0.1,
    "cost_device_s_per_token_norm": 3.0,
}


def failed(cur):
    return [r.metric for r in compare(BASE, {**BASE, **cur}) if not r.ok]


def test_identical_passes():
    assert failed({}) == []


@pytest.mark.parametrize(
    "change, metric",
    [
        ({"mfu": 0.289}, "mfu"),
        ({"p50_ttft_s_norm": 10.6}, "p50_ttft_s_norm"),
        ({"p95_ttft_s_norm": 21.1}, "p95_ttft_s_norm"),
        ({"p50_tpot_s_norm": 1.06}, "p50_tpot_s_norm"),
        ({"p95_tpot_s_norm": 2.2}, "p95_tpot_s_norm"),
        ({"kv_hit_rate": 0.49}, "kv_hit_rate"),
        ({"comm_share": 0.11}, "comm_share"),
        ({"cost_device_s_per_token_norm": 3.2}, "cost_device_s_per_token_norm"),
    ],
)
def test_each_threshold_fails(change, metric):
    assert failed(change) == [metric]


def test_within_thresholds_passes():
    assert (
        failed({"mfu": 0.291, "p50_ttft_s_norm": 10.49, "kv_hit_rate": 0.6, "comm_share": 0.0})
        == []
    )


def test_cli_exit_codes(tmp_path, capsys):
    b, c = tmp_path / "b.json", tmp_path / "c.json"
    b.write_text(json.dumps(BASE))
    c.write_text(json.dumps(BASE))
    assert main(["--baseline", str(b), "--current", str(c)]) == 0
    c.write_text(json.dumps({**BASE, "p95_tpot_s_norm": 3.0}))
    assert main(["--baseline", str(b), "--current", str(c)]) == 1
    out = capsys.readouterr().out
    assert "p95_tpot_s_norm" in out and "FAIL" in out
