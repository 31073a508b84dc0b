"""``bench --backend openai``: the client against a real HTTP server on 127.0.0.1 streaming real
engine tokens (a Starlette stand-in over NativeEngine, see openai_stand_in.py), failures and
timeouts, and an unreachable or malformed URL."""

import json
import socket
import time

import pandas as pd
import pytest
from openai_stand_in import StandIn, free_port

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.openai_backend import (
    EndpointError,
    OpenAIBenchmarkRunner,
    OpenAIEndpoint,
)
from sagellm.benchmarks.workloads import build_workload
from sagellm.cli import main
from sagellm.core import parse_config
from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.engines.native import NativeEngine

VOCAB = 256  # the tiny checkpoints' vocabulary is larger; ids are drawn below this


def tiny_bench(mode: str = "arrival", **over) -> BenchmarkConfig:
    d = {
        "experiment": "tiny",
        "workload": {
            "kind": "synthetic",
            "num_requests": 5,
            "arrival": {"process": "poisson", "rate_per_s": 50.0},
            "prompt_tokens": {"dist": "uniform", "min": 4, "max": 12},
            "output_tokens": {"dist": "fixed", "mean": 4},
        },
        "mode": mode,
        "warmup_requests": 1,
        "slo": {"ttft_s": 30.0},
        **over,
    }
    if mode == "concurrency":
        d["max_concurrency"] = 2
    return parse_config(d, BenchmarkConfig)


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    cfg = EngineConfig(model=ModelConfig(path=str(folder)), block_size_tokens=4)
    return NativeEngine(cfg)


@pytest.mark.parametrize("mode", ["arrival", "concurrency"])
def test_run_folder_and_counts(engine, tmp_path, mode):
    cfg = tiny_bench(mode)
    server = StandIn(engine, "tiny")
    with server as url:
        runner = OpenAIBenchmarkRunner(OpenAIEndpoint(url), progress=False, vocab_size=VOCAB)
        res = runner.run(cfg, results_root=tmp_path)
    reqs = build_workload(cfg.workload, VOCAB)
    # the token ids of the workload are what went over the wire (after the warm-up request)
    assert sorted(map(tuple, server.prompts[1:])) == sorted(tuple(r.prompt_token_ids) for r in reqs)
    m = res.metrics
    assert m["num_requests"] == 5 and m["num_completed"] == 5 and m["num_failed"] == 0
    assert m["total_output_tokens"] == sum(r.max_tokens for r in reqs) == 20
    assert m["total_input_tokens"] == sum(len(r.prompt_token_ids) for r in reqs)
    assert m["mean_ttft_s"] > 0 and m["p50_tpot_s"] > 0 and m["p50_itl_s"] > 0
    assert m["mfu"] is None and m["comm_share"] is None
    for r in res.repeats[0].requests:
        assert len(r.token_times_s) == r.num_output_tokens == 4  # one token per chunk here
    files = {p.name for p in res.run_dir.iterdir()}
    assert {"config.yaml", "env.json", "metrics.json", "requests.parquet", "report.md"} <= files
    env = json.loads((res.run_dir / "env.json").read_text())
    assert env["backend"] == "openai" and env["base_url"] == url and env["served_model"] == "tiny"
    assert "backend: openai client" in (res.run_dir / "report.md").read_text()
    assert len(pd.read_parquet(res.run_dir / "requests.parquet")) == 5


def test_timeouts_are_failed_requests_and_the_run_goes_on(engine, tmp_path):
    cfg = tiny_bench("concurrency", warmup_requests=0)
    with StandIn(engine, "tiny", stall_s=3.0) as url:
        ep = OpenAIEndpoint(url, timeout_s=0.5)
        t = time.perf_counter()
        res = OpenAIBenchmarkRunner(ep, progress=False, vocab_size=VOCAB).run(cfg, tmp_path)
        assert time.perf_counter() - t < 10
    m = res.metrics
    assert m["num_requests"] == 5 and m["num_failed"] == 5 and m["num_completed"] == 0
    assert all(r.error == "timed out after 0.5s" for r in res.repeats[0].requests)
    df = pd.read_parquet(res.run_dir / "requests.parquet")
    assert set(df["error"]) == {"timed out after 0.5s"}


def test_unknown_model_is_a_clear_error(engine):
    with StandIn(engine, "tiny") as url:
        runner = OpenAIBenchmarkRunner(OpenAIEndpoint(url, model="other"), progress=False)
        with pytest.raises(EndpointError, match=r"model 'other' is not served .* \['tiny'\]"):
            runner.run(tiny_bench(), results_root=None)


def test_unreachable_server_fails_fast_with_a_clear_message(capsys, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    t = time.perf_counter()
    rc = main(["bench", "--backend", "openai", "--base-url", url, "--results", str(tmp_path)])
    assert time.perf_counter() - t < 15
    assert rc == 2
    err = capsys.readouterr().err
    assert f"cannot reach {url}/models" in err and "is the server running" in err


def test_a_server_that_never_answers_is_bounded_by_the_connect_timeout():
    # a socket that accepts connections (the kernel's backlog) and never answers: no hang
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        ep = OpenAIEndpoint(url, connect_timeout_s=0.5)
        t = time.perf_counter()
        with pytest.raises(EndpointError, match="cannot reach .* within 0.5s"):
            OpenAIBenchmarkRunner(ep, progress=False).run(tiny_bench(), results_root=None)
        assert time.perf_counter() - t < 5


@pytest.mark.parametrize("bad", ["127.0.0.1:8000/v1", "ftp://x/v1", "http:///v1"])
def test_bad_url_is_rejected_before_sending(capsys, bad):
    rc = main(["bench", "--backend", "openai", "--base-url", bad])
    assert rc == 2
    assert "base_url must be an http(s) URL with a host" in capsys.readouterr().err


def test_backend_openai_needs_a_base_url(capsys):
    assert main(["bench", "--backend", "openai"]) == 2
    assert "--backend openai needs --base-url" in capsys.readouterr().err


def test_against_sagellm_serve(serve_server, tmp_path):
    """The real server (tests/integration/conftest.py: smollm2, API key, started by the test)."""
    cfg = tiny_bench("concurrency", warmup_requests=1)
    ep = OpenAIEndpoint(serve_server.base_url + "/v1", api_key=serve_server.api_key)
    res = OpenAIBenchmarkRunner(ep, progress=False).run(cfg, results_root=tmp_path)
    m = res.metrics
    failed = [r.error for r in res.repeats[0].requests if r.error]
    assert m["num_completed"] == 5 and not failed
    assert m["total_output_tokens"] == 20  # ignore_eos: every request runs to max_tokens
    reqs = build_workload(cfg.workload, 32000)
    assert m["total_input_tokens"] == sum(len(r.prompt_token_ids) for r in reqs)
    assert m["mean_ttft_s"] > 0 and m["p50_tpot_s"] > 0
    env = json.loads((res.run_dir / "env.json").read_text())
    assert env["served_model"] == serve_server.model
    wrong = OpenAIEndpoint(serve_server.base_url + "/v1", api_key="wrong")
    with pytest.raises(EndpointError, match="401"):
        OpenAIBenchmarkRunner(wrong, progress=False).run(cfg, results_root=None)
