"""The real model with a shared system prompt: later requests reuse its KV blocks and still
answer token for token like HF transformers fp32."""

import pytest

from sagellm.benchmarks.hf_reference import hf_greedy, load_hf_model
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

SYSTEM = (
    "You are a terse assistant for a geography quiz. Answer with one short sentence, name "
    "the place first, and never add follow-up questions or greetings."
)
QUESTIONS = ["What is the capital of France?", "Where is Mount Fuji?", "Name a river in Egypt."]
NEW_TOKENS = 12


@pytest.mark.slow
def test_shared_system_prompt_reused_and_equal_to_hf():
    engine = NativeEngine.from_pretrained(
        "smollm2-135m-instruct", block_size_tokens=16, enable_prefix_caching=True
    )
    prompts = [engine.encode(f"{SYSTEM}\n\n{q}") for q in QUESTIONS]
    sp = SamplingParams(max_tokens=NEW_TOKENS)
    outs = []
    for i, p in enumerate(prompts):
        engine.add_request(Request(f"q{i}", p, sp))
        while engine.has_unfinished():
            engine.step()
        outs.append(engine.output_token_ids(f"q{i}"))
    cached = [m.num_cached_tokens for m in engine.request_metrics()]
    assert cached[0] == 0 and min(cached[1:]) >= 48  # >= 3 blocks of the shared prompt
    assert outs == hf_greedy(load_hf_model("smollm2-135m-instruct"), prompts, NEW_TOKENS, False)


DETAIL = "Give the country, the nearest large city and one fact about its history."
LONG_QUESTIONS = [f"{q} {DETAIL}" for q in QUESTIONS]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_questions_sent_together_share_the_prompt_through_the_cascade(dtype, monkeypatch):
    """All questions at once: the first computes the system prompt, the others wait a step and
    hit it, and their chunks attend it through the cascade (threshold lowered to the prompt's
    size). fp32 equals HF token for token; bf16 (C++ bf16 kernels where the CPU has
    AVX512-BF16) starts every answer with fp32's first token."""
    from sagellm.engines.native import attention_cascade, prefill_dedup

    monkeypatch.setattr(attention_cascade, "MIN_SHARED_TOKENS", 16)
    monkeypatch.setattr(prefill_dedup, "MIN_DEFER_TOKENS", 8)
    calls = []
    merge = attention_cascade.merge
    monkeypatch.setattr(attention_cascade, "merge", lambda *a: calls.append(1) or merge(*a))
    engine = NativeEngine.from_pretrained(
        "smollm2-135m-instruct", block_size_tokens=8, enable_prefix_caching=True, dtype=dtype
    )
    prompts = [engine.encode(f"{SYSTEM}\n\n{q}") for q in LONG_QUESTIONS]
    outs = engine.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS))
    cached = [m.num_cached_tokens for m in engine.request_metrics()]
    assert cached[0] == 0 and min(cached[1:]) >= 24 and calls
    hf = hf_greedy(load_hf_model("smollm2-135m-instruct"), prompts, NEW_TOKENS, False)
    if dtype == "float32":
        assert outs == hf
    else:
        assert [o[0] for o in outs] == [h[0] for h in hf]
