"""PD across processes on the real model (SmolLM2-135M-Instruct): greedy outputs through the
prefill and decode processes equal the colocated engine and HF fp32; and the pd_bench ci
preset writes its run folder with both modes."""

import pytest
import torch

from sagellm.benchmarks.hf_reference import load_hf_model
from sagellm.benchmarks.run_folder import read_run
from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.pd import PDCluster, PDClusterConfig
from sagellm.experiments.pd_bench import run_pd_bench

PROMPTS = [
    "What is the capital of France?",
    "Explain what a KV cache is in one sentence.",
    "List three prime numbers.",
    "What is the capital of France? Answer in one word.",  # shares a prefix with the first
]
NEW_TOKENS = 16


@pytest.mark.heavy
@torch.inference_mode()
def test_pd_smollm2_equals_colocated_and_hf():
    cfg = EngineConfig(
        model=ModelConfig(path="smollm2-135m-instruct", dtype="float32"), block_size_tokens=16,
        num_kv_blocks=128, enable_prefix_caching=True,
    )  # fmt: skip
    colocated = NativeEngine(cfg)
    prompts = [colocated.encode(p) for p in PROMPTS]
    sp = SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True)
    want = colocated.generate(prompts, sp)
    hf = load_hf_model("smollm2-135m-instruct", "float32")
    for p, w in zip(prompts, want, strict=True):  # HF stops at EOS; the engine ignores it
        h = hf.generate(torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False)
        h = h[0, len(p) :].tolist()
        assert w[: len(h)] == h
    with PDCluster(PDClusterConfig(cfg)) as cluster:
        for i, p in enumerate(prompts):
            cluster.add_request(Request(f"s{i}", p, sp))
            while not cluster.output_token_ids(f"s{i}"):  # staggered
                cluster.step()
        while cluster.has_unfinished():
            cluster.step()
        got = [cluster.output_token_ids(f"s{i}") for i in range(len(prompts))]
    assert got == want


@pytest.mark.heavy
def test_pd_bench_ci_writes_both_modes(tmp_path):
    run = run_pd_bench("ci", results_root=tmp_path)
    info = read_run(run.run_dir)
    assert info is not None
    df = run.tables["requests"]
    assert set(df["mode"]) == {"colocated", "pd"}
    assert (df["finish_reason"] == "length").all()
    assert run.metrics["pd_all_p95_tpot_s"] > 0 and run.metrics["colocated_all_p95_tpot_s"] > 0
