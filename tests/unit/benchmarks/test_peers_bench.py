"""The peer benchmark: issue 11's workloads exactly, the table's ratios, and the ci preset run
end to end with HF (vLLM absent here: its column is skipped with a note)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sagellm.benchmarks.peers import PRESETS, agreement, check_peers, run_peers
from sagellm.benchmarks.peers_table import markdown, ratio, wide_rows


def test_full_workloads_are_issue_11s_token_ids():
    w1, w2, w3 = (PRESETS["full"][k] for k in ("w1", "w2", "w3"))
    p1 = w1.prompts()
    assert np.array_equal(p1, np.random.default_rng(1).integers(17, 49152, (64, 256)))
    assert (w1.output_tokens, w3.output_tokens, w2.output_tokens) == (128, 256, 32)
    p2 = w2.prompts()
    prefix = np.random.default_rng(2).integers(17, 49152, 1024).tolist()
    unique = np.random.default_rng(3).integers(17, 49152, (64, 64)).tolist()
    assert p2 == [prefix + u for u in unique] and w2.prefix_caching
    assert w3.prompts() == np.random.default_rng(4).integers(17, 49152, (1, 32)).tolist()


def test_ratios_and_missing_cells():
    rows = [
        dict(workload="w1", dtype="float32", engine=e, metric="output_tok_per_s", value=v)
        for e, v in (("native", 300.0), ("hf", 100.0))
    ]
    wide = wide_rows(rows, ("hf", "vllm"))
    assert wide == [
        {
            "workload": "w1",
            "metric": "output_tok_per_s",
            "dtype": "float32",
            "native": 300.0,
            "hf": 100.0,
            "vllm": None,
            "native/hf": 3.0,
            "native/vllm": None,
        }
    ]
    assert ratio(1.0, 0.0) is None and ratio(None, 2.0) is None
    md = markdown(rows, ("hf", "vllm"), {"read_bytes_per_s": 2e10}, ["vllm skipped"])
    assert "| w1 | output_tok_per_s | float32 | 300 | 100 | – | 3 | – |" in md
    assert md.rstrip().endswith("- vllm skipped")
    assert agreement([[1, 2], [3, 4]], [[1, 2], [3, 5]]) == 0.75


def test_bad_peer_names_the_field():
    with pytest.raises(ValueError, match="peers: unknown peer 'sglang'; allowed: hf, vllm"):
        check_peers(["hf", "sglang"])
    with pytest.raises(ValueError, match="preset: unknown 'w1'; allowed: full, ci"):
        run_peers("w1", ("hf",))
    with pytest.raises(ValueError, match="workloads: unknown 'w4'; allowed: w1, w2, w3"):
        run_peers("ci", ("hf",), workloads=("w3", "w4"))


def test_ci_preset_runs_native_beside_hf(tmp_path, monkeypatch):
    monkeypatch.setenv("SAGELLM_VLLM_PYTHON", str(tmp_path / "no-vllm" / "python"))
    run_dir = run_peers("ci", ("hf", "vllm"), ("float32", "bfloat16"), tmp_path)
    df = pd.read_parquet(run_dir / "peers.parquet")
    got = {(w, e) for w, e in zip(df.workload, df.engine, strict=True)}
    assert got == {(w, "native") for w in ("w1", "w2", "w3")} | {("w1", "hf"), ("w3", "hf")}

    def value(w, d, e, m):
        return df[(df.workload == w) & (df.dtype == d) & (df.engine == e) & (df.metric == m)].value

    for d in ("float32", "bfloat16"):
        for w, m in (("w1", "output_tok_per_s"), ("w3", "decode_tok_per_s"), ("w2", "wall_s")):
            assert float(value(w, d, "native", m).iloc[0]) > 0
    # same weights, greedy, fp32: HF chooses the native engine's tokens
    assert float(value("w1", "float32", "hf", "token_agreement_vs_native").iloc[0]) == 1.0
    assert float(value("w3", "float32", "hf", "token_agreement_vs_native").iloc[0]) == 1.0
    md = (run_dir / "peers.md").read_text()
    assert "make vllm-env" in md and "hf w2: n/a" in md
    native = float(value("w1", "float32", "native", "output_tok_per_s").iloc[0])
    hf = float(value("w1", "float32", "hf", "output_tok_per_s").iloc[0])
    assert f"| {native / hf:.3g} |" in md.split("| w1 | output_tok_per_s | float32 |")[1]


def test_each_cells_roofline_uses_the_read_rate_measured_just_before_it(tmp_path, monkeypatch):
    """The read rate drifts within a run: every cell is measured against its own reading,
    which is reported beside it."""
    import sagellm.benchmarks.peers as peers

    rates = iter([1e9 * (i + 1) for i in range(20)])  # start of run, then one per cell

    def fake(preset, flops=True):
        out = {"read_bytes_per_s": next(rates)}
        if flops:
            out |= {f"peak_{d}_flops_per_s": 1e11 for d in peers.DTYPES}
        return out

    monkeypatch.setattr(peers, "measure_machine", fake)
    monkeypatch.setenv("SAGELLM_VLLM_PYTHON", str(tmp_path / "no-vllm" / "python"))
    run_dir = run_peers("ci", (), ("float32",), tmp_path)
    df = pd.read_parquet(run_dir / "peers.parquet")
    shape = peers.ModelShape.from_checkpoint(peers.preset_model("ci", tmp_path / "models"))
    w3 = df[df.workload == "w3"].set_index("metric").value
    assert float(w3["read_bytes_per_s"]) == 4e9  # w1, w2, w3 cells: the 2nd, 3rd, 4th reading
    expected = float(w3["decode_tok_per_s"]) / (4e9 / shape.decode_weight_bytes("float32"))
    assert float(w3["roofline_fraction"]) == pytest.approx(expected)
