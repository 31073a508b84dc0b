"""Greedy tokens and logits of the native engine equal HF transformers fp32 on tiny models.

Tiny random Llama / Qwen2 / Qwen3 checkpoints are created with ``save_pretrained`` (conftest).
Each scenario exercises a lossless engine feature: mixed lengths joining at different steps,
chunked prefill, long sequences over many 16-token blocks, and preemption by recompute.
"""

import pytest
import torch

from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

FAMILIES = ["llama", "qwen2", "qwen3"]
LOGIT_ATOL = 1e-3  # fp32: different summation orders only


def prompts_of(lengths, seed=1, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


@torch.inference_mode()
def hf_reference(model, prompt, n_new):
    """HF greedy tokens and the logits each token was chosen from."""
    out = model.generate(
        torch.tensor([prompt]),
        max_new_tokens=n_new,
        min_new_tokens=n_new,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    return out.sequences[0, len(prompt) :].tolist(), torch.stack([x[0] for x in out.logits])


def check(engine, model, prompts, n_new, stagger=0):
    """Run prompts through the engine (adding one every ``stagger`` steps) and compare."""
    engine.record_logits = True
    sp = SamplingParams(max_tokens=n_new, ignore_eos=True)
    ids = [f"r{i}" for i in range(len(prompts))]
    pending = list(zip(ids, prompts, strict=True))
    steps = 0
    while pending or engine.has_unfinished():
        if pending and (stagger == 0 or steps % stagger == 0):
            rid, p = pending.pop(0)
            engine.add_request(Request(rid, p, sp))
            if stagger == 0:
                continue
        engine.step()
        steps += 1
    for rid, p in zip(ids, prompts, strict=True):
        ref_tokens, ref_logits = hf_reference(model, p, n_new)
        assert engine.output_token_ids(rid) == ref_tokens, rid
        ours = torch.stack(engine.recorded_logits[rid])
        torch.testing.assert_close(ours, ref_logits.float(), atol=LOGIT_ATOL, rtol=1e-4)
    return steps


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_lengths_join_at_different_steps(tiny_checkpoint, family):
    model, folder = tiny_checkpoint(family)
    engine = NativeEngine.from_pretrained(folder, block_size_tokens=4)
    check(engine, model, prompts_of([5, 17, 1, 33, 9, 2]), n_new=12, stagger=3)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_prefill_over_several_steps(tiny_checkpoint, family):
    model, folder = tiny_checkpoint(family)
    engine = NativeEngine.from_pretrained(folder, block_size_tokens=8, max_num_batched_tokens=16)
    check(engine, model, prompts_of([50, 37, 3]), n_new=8)
    prefill_steps = [s for s in engine.step_metrics() if s.num_prefill_tokens > 0]
    assert len(prefill_steps) >= 5  # 90 prompt tokens at <= 16 per step
    assert max(s.num_batched_tokens for s in engine.step_metrics()) <= 16


def test_block_size_16_over_twenty_blocks(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    engine = NativeEngine.from_pretrained(folder, block_size_tokens=16)
    check(engine, model, prompts_of([300, 140]), n_new=40)
    # 340 tokens / 16 = 22 blocks for the first sequence at its longest
    assert max(s.kv_blocks_used for s in engine.step_metrics()) >= 22 + 12


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_preemption_by_recompute_keeps_output(tiny_checkpoint, family):
    model, folder = tiny_checkpoint(family)
    # 10 blocks of 4 tokens: three 10-token prompts fit, their decodes do not
    engine = NativeEngine.from_pretrained(folder, block_size_tokens=4, num_kv_blocks=10)
    check(engine, model, prompts_of([10, 10, 10]), n_new=16)
    assert sum(m.preemptions for m in engine.request_metrics()) >= 1
    assert sum(s.num_preempted for s in engine.step_metrics()) >= 1
    assert engine.kv.num_referenced_blocks == 0


def test_bfloat16_runs_and_tracks_fp32(tiny_checkpoint):
    """bf16 is not an oracle match (HF bf16 diverges too); its first token should agree."""
    model, folder = tiny_checkpoint("llama")
    engine = NativeEngine.from_pretrained(folder, dtype="bfloat16")
    ps = prompts_of([8, 12, 20])
    outs = engine.generate(ps, SamplingParams(max_tokens=4, ignore_eos=True))
    refs = [hf_reference(model, p, 1)[0][0] for p in ps]
    assert [o[0] for o in outs] == refs
