"""The report's gate table reads the newest lockstep verdict, else a marked cross-run reading."""

import json

from sagellm.benchmarks.perf_report import latest_gate_table


def test_note_when_nothing_ran(tmp_path):
    df = latest_gate_table(tmp_path, tmp_path / "baseline.json")
    assert list(df.columns) == ["note"]


def test_newest_lockstep_verdict_wins(tmp_path):
    for name, ok in (("20260101-000000-a-1", False), ("20260102-000000-a-1", True)):
        d = tmp_path / "gate" / name
        d.mkdir(parents=True)
        row = {"metric": "p50_tpot_s", "baseline": 0.08, "current": 0.081, "ok": ok}
        (d / "gate.json").write_text(json.dumps({"rows": [row]}))
    df = latest_gate_table(tmp_path, tmp_path / "baseline.json")
    assert df["ok"].tolist() == [True]
    assert df["source"][0].endswith("20260102-000000-a-1")


def test_cross_run_reading_is_marked(tmp_path):
    run = tmp_path / "ci" / "r1"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"p50_tpot_s_norm": 2.0}))
    (tmp_path / "b.json").write_text(json.dumps({"p50_tpot_s_norm": 1.0}))
    df = latest_gate_table(tmp_path, tmp_path / "b.json")
    assert "not a verdict" in df["source"][0]
    assert not df.set_index("metric").loc["p50_tpot_s_norm", "ok"]
