"""The real model: speculative decoding of SmolLM2-135M-Instruct on GSM8K questions equals HF
transformers fp32 greedy, batched, with prefix caching on (n-gram and truncated-copy drafters)."""

import pytest
import torch

from sagellm.accel.eval_data import eval_data_available, gsm8k_problems
from sagellm.benchmarks.hf_reference import load_hf_model
from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

NEW_TOKENS = 24
available, reason = eval_data_available()
pytestmark = [pytest.mark.slow, pytest.mark.heavy, pytest.mark.skipif(not available, reason=reason)]


def _engine(method: str) -> NativeEngine:
    return NativeEngine(
        EngineConfig(
            model=ModelConfig(path="smollm2-135m-instruct"),
            num_kv_blocks=64,
            block_size_tokens=16,
            enable_prefix_caching=True,
            accel=AccelConfig(speculative_tokens=4, speculative_method=method),
        )
    )


@pytest.fixture(scope="module")
def references():
    engine = _engine("ngram")
    prompts = [engine.encode(p.question) for p in gsm8k_problems(2)]
    hf = load_hf_model("smollm2-135m-instruct", "float32")
    refs = []
    with torch.inference_mode():
        for p in prompts:
            out = hf.generate(
                torch.tensor([p]),
                attention_mask=torch.ones(1, len(p), dtype=torch.long),
                max_new_tokens=NEW_TOKENS,
                do_sample=False,
            )
            refs.append(out[0, len(p) :].tolist())
    return engine, prompts, refs


@pytest.mark.parametrize("method", ["ngram", "draft_model"])
def test_gsm8k_speculative_equals_hf(references, method):
    ngram_engine, prompts, refs = references
    engine = ngram_engine if method == "ngram" else _engine(method)
    outs = engine.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS))
    # HF stops at EOS: compare the common length (none of these answers ends that early)
    assert [o[: len(r)] for o, r in zip(outs, refs, strict=True)] == refs
    assert engine.stats()["spec_num_draft_tokens"] > 0
    assert engine.kv.num_referenced_blocks == 0
