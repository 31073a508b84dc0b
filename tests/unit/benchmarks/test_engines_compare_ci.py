"""engines_compare: the ci preset runs on the native engine into one results root; engines not
installed are skipped; ratios are against the first engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from sagellm.benchmarks.engines_compare import compare_engines, preset_config, ratios


@pytest.mark.slow  # a real native run incl. peak-FLOP measurement (~50 s on a contended box)
def test_ci_preset_on_native_and_a_missing_vllm(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SAGELLM_VLLM_PYTHON", str(tmp_path / "no-vllm" / "python"))
    res = compare_engines("ci", ["native", "vllm"], tmp_path)
    assert list(res) == ["native"]
    assert "skipped vllm: not installed here" in capsys.readouterr().out
    m = res["native"]
    assert m["output_throughput_tok_per_s"] > 0 and m["kv_hit_rate"] > 0
    assert (Path(m["run_dir"]) / "metrics.json").is_file()


def test_presets_and_ratios(tmp_path):
    with pytest.raises(ValueError, match="known: ci, full"):
        preset_config("huge", tmp_path)
    r = ratios(
        {
            "a": {"output_throughput_tok_per_s": 10.0, "p50_ttft_s": 2.0},
            "b": {"output_throughput_tok_per_s": 15.0, "p50_ttft_s": 1.0},
        }
    )
    assert r["b"] == {"output_throughput_tok_per_s": 1.5, "p50_ttft_s": 0.5}
