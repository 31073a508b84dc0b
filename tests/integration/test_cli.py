import json

from sagellm.cli import main


def test_generate_prints_completion(capsys):
    rc = main(["generate", "--prompt", "What is the capital of France?", "--max-tokens", "12"])
    assert rc == 0
    assert "Paris" in capsys.readouterr().out


def test_generate_reports_bad_input(capsys):
    rc = main(["generate", "--prompt", "hi", "--max-tokens", "0"])
    assert rc == 2
    assert "sampling.max_tokens" in capsys.readouterr().err


def test_bench_tiny_preset_prints_throughput(tiny_checkpoint, capsys):
    _, folder = tiny_checkpoint("llama")
    rc = main(["bench", "--offline", "--preset", "tiny", "--model", str(folder), "--compare-hf"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "output tokens/s (float32):" in out
    assert "hf_token_agreement: 1" in out  # greedy fp32 matches HF token for token


def test_quickstart_writes_results(tmp_path):
    from sagellm.experiments.quickstart import run_quickstart

    run = run_quickstart(["What is 2 + 2?"], max_tokens=8, results_root=tmp_path)
    files = {p.name for p in run.run_dir.iterdir()}
    assert {"config.yaml", "metrics.json", "requests.parquet", "steps.parquet"} <= files
    assert "tokens_over_time.png" in files and "tokens_over_time.html" in files
    m = json.loads((run.run_dir / "metrics.json").read_text())
    assert m["num_completed"] == 1 and m["total_output_tokens"] >= 1
    assert not [p for p in run.run_dir.iterdir() if p.name.endswith(".tmp")]
    # the run-folder contract: env.json and a report (`sagellm report` used to fail with
    # KeyError: 'engine' on quickstart folders)
    assert {"env.json", "run.json", "report.md", "completions.parquet"} <= files
    (run.run_dir / "report.md").unlink()
    assert main(["report", str(run.run_dir)]) == 0
    report = (run.run_dir / "report.md").read_text()
    assert "kind: quickstart" in report and "What is 2 + 2?" in report
    assert "![tokens_over_time.png](tokens_over_time.png)" in report


def test_bench_peers_runs_only_the_chosen_workloads(tmp_path, monkeypatch, capsys):
    import pandas as pd

    monkeypatch.setenv("SAGELLM_VLLM_PYTHON", str(tmp_path / "no-vllm" / "python"))
    argv = ["bench", "--peers", "hf", "--preset", "ci", "--workloads", "w3"]
    rc = main([*argv, "--results", str(tmp_path)])
    assert rc == 0
    (run,) = (tmp_path / "peers_ci").iterdir()
    df = pd.read_parquet(run / "peers.parquet")
    assert set(df.workload) == {"w3"} and set(df.engine) == {"native", "hf"}
    assert "| w3 |" in capsys.readouterr().out
