"""DEER-style early exit: the reasoning stops at the first step boundary where the last
``trial_stable_checks`` trial answers agree (a scripted answer key makes the case exact); the
reasoning before the exit is the target's greedy prefix, the output ends with the trial
prompt and the target's real greedy trial answer; an answer that never stabilises changes
nothing."""

import pytest
import torch

from sagellm.accel.cot import CoTAccelController, CoTConfig
from sagellm.core.types import SamplingParams
from sagellm.engines.native import NativeEngine

MAX_NEW_TOKENS = 30
TRIAL_PROMPT = (3, 4, 5)


@pytest.fixture(scope="module")
def setup(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    target = NativeEngine.from_pretrained(folder, num_kv_blocks=64, enable_prefix_caching=True)
    prompt = torch.randint(0, 256, (21,), generator=torch.Generator().manual_seed(5)).tolist()
    greedy = target.generate([prompt], SamplingParams(max_tokens=MAX_NEW_TOKENS))[0]
    delims = frozenset(greedy[2::3])  # step boundaries every few tokens
    return target, prompt, greedy, delims


def _config(delims, **kw):
    return CoTConfig(
        delimiter_token_ids=delims,
        max_new_tokens=MAX_NEW_TOKENS,
        speculative_steps=False,
        early_exit=True,
        trial_prompt_token_ids=TRIAL_PROMPT,
        trial_max_tokens=4,
        **kw,
    )


def test_exits_when_the_last_k_trial_answers_agree(setup):
    target, prompt, greedy, delims = setup
    script = iter([1, 2, 2, 3, 3, 3, 4, 4, 4, 4])
    ctl = CoTAccelController(
        target, _config(delims, trial_stable_checks=3), None, lambda _: next(script)
    )
    res = ctl.accelerate_cot(prompt)
    assert res.finish_reason == "early_exit"
    assert len(res.trials) == 6  # keys 1, 2, 2, 3, 3, 3: the sixth check makes three in a row
    n = res.num_reasoning_tokens
    assert n == res.trials[-1].after_tokens < MAX_NEW_TOKENS
    assert list(res.output_token_ids[:n]) == greedy[:n]  # the reasoning itself is lossless
    answer = list(res.output_token_ids[n:])
    assert answer[: len(TRIAL_PROMPT)] == list(TRIAL_PROMPT)
    # the trial answer is the target's greedy answer after the trial prompt (stops excluded)
    stops = tuple(sorted(delims))
    ref = target.generate(
        [prompt + greedy[:n] + list(TRIAL_PROMPT)],
        SamplingParams(max_tokens=4, stop_token_ids=stops),
    )[0]
    if ref and ref[-1] in delims:
        ref = ref[:-1]
    assert answer[len(TRIAL_PROMPT) :] == ref == list(res.trials[-1].token_ids)
    assert all(greedy[t.after_tokens - 1] in delims for t in res.trials)  # at step boundaries


def test_checks_start_after_min_steps_and_run_every_n_steps(setup):
    target, prompt, _, delims = setup
    cfg = _config(delims, trial_stable_checks=1, min_steps_before_exit=2, trial_every_steps=2)
    res = CoTAccelController(target, cfg, None, lambda ids: "same").accelerate_cot(prompt)
    assert res.finish_reason == "early_exit" and len(res.trials) == 1
    assert len(res.steps) == 2


def test_an_answer_that_never_stabilises_leaves_the_output_unchanged(setup):
    target, prompt, greedy, delims = setup
    cfg = _config(delims, trial_every_steps=3)
    res = CoTAccelController(target, cfg, None, lambda ids: None).accelerate_cot(prompt)
    assert res.finish_reason == "length"
    assert list(res.output_token_ids) == greedy
    assert len(res.trials) >= 2
