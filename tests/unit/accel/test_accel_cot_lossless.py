"""Speculative reasoning steps are lossless for greedy decoding: whatever the drafter (the
target itself, a layer-truncated copy, an unrelated model of the same vocabulary) the output
equals the target's plain greedy run token for token; an identical drafter has every step
accepted with one target forward each, and verification reuses the cached prefix."""

import pytest
import torch

from sagellm.accel.cot import CoTAccelController, CoTConfig
from sagellm.benchmarks.truncated_model import truncated_checkpoint
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

MAX_NEW_TOKENS = 24


def _engine(folder):
    return NativeEngine.from_pretrained(folder, num_kv_blocks=64, enable_prefix_caching=True)


def _prompts():
    g = torch.Generator().manual_seed(7)
    return [torch.randint(0, 256, (n,), generator=g).tolist() for n in (20, 37)]


@pytest.fixture(scope="module")
def setup(tiny_checkpoint, tmp_path_factory):
    _, folder = tiny_checkpoint("llama")
    _, other = tiny_checkpoint("qwen2")
    target = _engine(folder)
    prompts = _prompts()
    greedy = [target.generate([p], SamplingParams(max_tokens=MAX_NEW_TOKENS))[0] for p in prompts]
    # a step ends at the tokens greedy decoding emits at every 6th position: real boundaries
    delims = frozenset(t for out in greedy for t in out[5::6])
    trunc = truncated_checkpoint(folder, tmp_path_factory.mktemp("trunc"), 1)
    drafters = {"identical": _engine(folder), "truncated": _engine(trunc), "other": _engine(other)}
    return target, drafters, prompts, greedy, delims


@pytest.mark.parametrize("name", ["identical", "truncated", "other"])
def test_output_equals_plain_greedy_for_every_drafter(setup, name):
    target, drafters, prompts, greedy, delims = setup
    cfg = CoTConfig(delimiter_token_ids=delims, max_new_tokens=MAX_NEW_TOKENS, max_step_tokens=8)
    ctl = CoTAccelController(target, cfg, drafters[name])
    n = len(prompts) if name == "identical" else 1  # the slow drafters on one prompt
    for prompt, ref in zip(prompts[:n], greedy[:n], strict=True):
        res = ctl.accelerate_cot(prompt)
        assert list(res.output_token_ids) == ref
        assert res.finish_reason == "length" and res.num_reasoning_tokens == MAX_NEW_TOKENS
        assert sum(len(s.token_ids) for s in res.steps) == MAX_NEW_TOKENS
        assert res.num_drafted_steps == len(res.steps)
        if name == "identical":
            assert res.num_corrected_steps == 0
            assert res.num_accepted_draft_tokens == res.num_draft_tokens == MAX_NEW_TOKENS
        if name == "other":  # an unrelated model's drafts are rejected and corrected
            assert res.num_corrected_steps > 0
    assert target.kv.num_referenced_blocks == 0


def test_identical_drafter_verifies_each_step_in_one_forward_on_the_cached_prefix(setup):
    target, drafters, prompts, greedy, delims = setup
    cfg = CoTConfig(delimiter_token_ids=delims, max_new_tokens=MAX_NEW_TOKENS, max_step_tokens=8)
    ctl = CoTAccelController(target, cfg, drafters["identical"])
    target.reset_metrics()
    res = ctl.accelerate_cot(prompts[1])
    assert list(res.output_token_ids) == greedy[1]
    assert len(target.step_metrics()) == len(res.steps)  # one engine forward per step
    assert all(s.num_target_forwards == 1 for s in res.steps)
    scored = target.request_metrics()
    assert len(scored) == len(res.steps)
    # every verification after the first starts from the cached blocks of the one before
    for m in scored[1:]:
        assert m.num_cached_tokens >= 16
    # tokens the verification forwards computed: the draft + at most one partial block
    computed = sum(m.num_prompt_tokens - m.num_cached_tokens for m in scored)
    assert computed < len(prompts[1]) + MAX_NEW_TOKENS + 16 * len(res.steps)
