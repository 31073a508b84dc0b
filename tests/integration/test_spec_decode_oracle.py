"""Speculative decoding in the native engine equals plain decoding and HF fp32, token for token.

Tiny random Llama checkpoints (conftest). Drafters: n-gram lookup, layer skipping, the
layer-truncated copy (default ``draft_model``) and a full copy loaded from the same folder
(every draft accepted: exercises long accepted runs, the bonus token, and stops inside a run).
Prompts repeat a random 6-gram so the n-gram drafter has something to copy.
"""

from __future__ import annotations

import pytest
import torch

from sagellm.accel.speculative import NgramDrafter, run_speculative_decode
from sagellm.benchmarks.random_model import random_checkpoint
from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig, parse_config
from sagellm.core.errors import ConfigError, PlanRejectedError
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.native.paged_lm import PagedLM
from sagellm.scheduler_ir.plan import ExecutionPlan

N_NEW = 14
K = 3
LOGIT_ATOL = 1e-3


def prompts_of(lengths, seed=3, vocab=256):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        gram = torch.randint(0, vocab, (6,), generator=g).tolist()
        tail = torch.randint(0, vocab, (n,), generator=g).tolist()
        out.append(gram * 2 + tail + gram[:3])
    return out


_HF: dict = {}


@torch.inference_mode()
def hf_reference(model, prompt, n_new):
    key = (id(model), tuple(prompt), n_new)
    if key not in _HF:
        out = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=n_new,
            min_new_tokens=n_new,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
        _HF[key] = out.sequences[0, len(prompt) :].tolist(), torch.stack([x[0] for x in out.logits])
    return _HF[key]


def accel_for(kind: str, folder) -> AccelConfig:
    if kind == "int8_copy":  # the target's own int8 copy, full depth, drafts
        return AccelConfig(
            speculative_tokens=K,
            speculative_method="draft_model",
            speculative_draft_quantization="int8",
        )
    if kind == "full_copy":
        return AccelConfig(
            speculative_tokens=K, speculative_method="draft_model", draft_model=str(folder)
        )
    return AccelConfig(speculative_tokens=K, speculative_method=kind)


def engine_for(folder, accel=None, **kw) -> NativeEngine:
    kw.setdefault("block_size_tokens", 4)
    kw.setdefault("num_kv_blocks", 128)
    return NativeEngine(
        EngineConfig(model=ModelConfig(path=str(folder)), accel=accel or AccelConfig(), **kw)
    )


def run(engine, prompts, sp, stagger=0, prefix="r"):
    """Run to completion (one request joins every ``stagger`` steps); returns the streamed
    tokens per request id."""
    engine.record_logits = True
    ids = [f"{prefix}{i}" for i in range(len(prompts))]
    pending = list(zip(ids, prompts, strict=True))
    streamed = {rid: [] for rid in ids}
    steps = 0
    while pending or engine.has_unfinished():
        if pending and (stagger == 0 or steps % stagger == 0):
            rid, p = pending.pop(0)
            engine.add_request(Request(rid, p, sp))
            if stagger == 0:
                continue
        for out in engine.step():
            streamed[out.request_id].extend(out.new_token_ids)
        steps += 1
    for rid in ids:
        assert streamed[rid] == engine.output_token_ids(rid)
    return ids


def check_oracle(engine, model, prompts, ids, n_new):
    for rid, p in zip(ids, prompts, strict=True):
        ref_tokens, ref_logits = hf_reference(model, p, n_new)
        assert engine.output_token_ids(rid) == ref_tokens, rid
        ours = torch.stack(engine.recorded_logits[rid])
        torch.testing.assert_close(ours, ref_logits.float(), atol=LOGIT_ATOL, rtol=1e-4)


# on these 2-layer checkpoints the truncated copy (draft_model's default: half the layers)
# and layer skipping both keep layer 0 only: draft_model runs batch 1 on another family below
@pytest.mark.parametrize("kind", ["ngram", "layer_skip", "full_copy", "int8_copy"])
def test_batched_with_prefix_caching_equals_hf(tiny_checkpoint, kind):
    model, folder = tiny_checkpoint("llama")
    engine = engine_for(folder, accel_for(kind, folder), enable_prefix_caching=True)
    prompts = prompts_of([5, 11, 2])
    sp = SamplingParams(max_tokens=N_NEW, ignore_eos=True)
    ids = run(engine, prompts, sp, stagger=2)
    check_oracle(engine, model, prompts, ids, N_NEW)
    st = engine.stats()
    assert st["spec_num_draft_tokens"] > 0
    assert sum(s.num_draft_tokens for s in engine.step_metrics()) == st["spec_num_draft_tokens"]
    assert (
        sum(s.num_accepted_tokens for s in engine.step_metrics()) == st["spec_num_accepted_tokens"]
    )
    if kind == "full_copy":
        assert st["spec_acceptance_rate"] == 1.0
    assert engine.kv.num_referenced_blocks == 0
    # second round: prompts extended by their outputs hit blocks that hold accepted drafts'
    # KV; an indexed unverified token would change these logits
    longer = [p + engine.output_token_ids(r) for p, r in zip(prompts, ids, strict=True)]
    ids2 = run(engine, longer, sp, prefix="s")
    assert engine.stats()["prefix_token_hit_rate"] > 0
    check_oracle(engine, model, longer, ids2, N_NEW)


@pytest.mark.parametrize("kind", ["ngram", "draft_model", "full_copy"])
def test_batch_one_equals_hf(tiny_checkpoint, kind):
    model, folder = tiny_checkpoint("qwen3")
    engine = engine_for(folder, accel_for(kind, folder))
    prompts = prompts_of([9], seed=5)
    ids = run(engine, prompts, SamplingParams(max_tokens=N_NEW, ignore_eos=True))
    check_oracle(engine, model, prompts, ids, N_NEW)


def test_quantized_draft_leaves_the_target_dense(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    engine = engine_for(folder, accel_for("int8_copy", folder))
    target = engine.model.linear_weights()
    draft = engine.drafter.lm.model.linear_weights()
    assert set(draft) == set(target)  # full depth
    assert all(isinstance(w, torch.Tensor) for w in target.values())
    assert not any(isinstance(w, torch.Tensor) for w in draft.values())
    assert engine.drafter.lm.model.num_weight_bytes < engine.model.num_weight_bytes / 3


def test_stop_and_max_tokens_inside_an_accepted_run(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    prompt = prompts_of([4], seed=9)[0]
    plain = engine_for(folder).generate([prompt], SamplingParams(max_tokens=20, ignore_eos=True))
    plain = plain[0]
    i = next(i for i in range(3, 20) if plain[i] not in plain[:i] and i % (K + 1) != 0)
    engine = engine_for(folder, accel_for("full_copy", folder))
    stop = SamplingParams(max_tokens=20, stop_token_ids=(plain[i],), ignore_eos=True)
    (rid,) = run(engine, [prompt], stop, prefix="stop")
    assert engine.output_token_ids(rid) == plain[: i + 1]
    assert engine.request_metrics()[-1].finish_reason == "stop"
    (rid,) = run(engine, [prompt], SamplingParams(max_tokens=7, ignore_eos=True), prefix="len")
    assert engine.output_token_ids(rid) == plain[:7]
    assert engine.kv.num_referenced_blocks == 0


@pytest.mark.parametrize("strategy", ["fifo", "priority", "lpm", "slo_aware"])
def test_scheduling_strategies_and_token_budget(tiny_checkpoint, strategy):
    _, folder = tiny_checkpoint("llama")
    prompts = prompts_of([3, 8, 1], seed=11)
    sp = SamplingParams(max_tokens=8, ignore_eos=True)
    plain = engine_for(folder, scheduling_strategy=strategy).generate(prompts, sp)
    engine = engine_for(
        folder,
        accel_for("full_copy", folder),
        scheduling_strategy=strategy,
        max_num_batched_tokens=10,
        enable_prefix_caching=True,
    )
    assert engine.generate(prompts, sp) == plain
    steps = engine.step_metrics()
    assert max(s.num_batched_tokens for s in steps) <= 10  # drafts counted in the budget
    assert sum(s.num_draft_tokens for s in steps) > 0


def test_abort_and_failed_forward_free_everything(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    prompts = prompts_of([3, 6, 2], seed=13)
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    plain = engine_for(folder).generate(prompts, sp)
    engine = engine_for(folder, accel_for("layer_skip", folder))
    lm = engine.drafter.lm
    total = lm.num_free_blocks
    for i, p in enumerate(prompts):
        engine.add_request(Request(f"a{i}", p, sp))
    for _ in range(3):
        engine.step()
    assert engine.abort("a1")
    while engine.has_unfinished():
        engine.step()
    assert engine.output_token_ids("a0") == plain[0]
    assert engine.output_token_ids("a2") == plain[2]
    assert engine.kv.num_referenced_blocks == 0 and lm.num_free_blocks == total

    # the target's forward fails once (e.g. out of memory): those requests end with
    # "error", the engine keeps serving and the drafter's KV is released
    real = engine.model

    class FailOnce:
        def __getattr__(self, name):
            return getattr(real, name)

        def forward(self, *a, **kw):
            engine.model = real
            raise RuntimeError("simulated device failure")

    engine.add_request(Request("f0", prompts[0], sp))
    engine.step()  # prefill
    engine.model = FailOnce()
    outs = engine.step()  # a verify step
    assert [o.finish_reason for o in outs] == ["error"]
    assert engine.kv.num_referenced_blocks == 0 and lm.num_free_blocks == total
    assert engine.generate([prompts[2]], sp) == [plain[2]]


def test_sampling_is_seeded_and_a_perfect_draft_is_always_accepted(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    prompts = prompts_of([4, 7], seed=17)
    sps = [SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, seed=s) for s in (1, 2)]
    outs = []
    for _ in range(2):
        engine = engine_for(folder, accel_for("full_copy", folder))
        outs.append(engine.generate(prompts, sps))
        # q == p exactly: min(1, p/q) = 1, every draft is accepted
        assert engine.stats()["spec_acceptance_rate"] == 1.0
    assert outs[0] == outs[1] and all(len(o) == 12 for o in outs[0])


def test_run_speculative_decode_equals_the_engine(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    prompt = prompts_of([6], seed=19)[0]
    sp = SamplingParams(max_tokens=N_NEW, ignore_eos=True)
    engine = engine_for(folder)
    plain = engine.generate([prompt], sp)[0]
    target = PagedLM(engine.model, 32, 4)
    res = run_speculative_decode(target, NgramDrafter(1, 3), prompt, K, sp)
    assert res.token_ids == plain and res.finish_reason == "length"
    assert res.num_target_forwards < N_NEW  # some drafts were accepted
    assert target.num_free_blocks == 32  # released


def test_accel_controller_runs_speculative_decode(tiny_checkpoint):
    """The plan's entry point: ``AccelController.run_speculative_decode`` with the configured
    ``speculative_tokens`` equals plain greedy decoding; off, it is a ConfigError."""
    from sagellm.accel import AccelController

    _, folder = tiny_checkpoint("llama")
    prompt = prompts_of([6], seed=19)[0]
    sp = SamplingParams(max_tokens=N_NEW, ignore_eos=True)
    engine = engine_for(folder)
    plain = engine.generate([prompt], sp)[0]
    ctl = AccelController()
    ctl.setup(EngineConfig(accel=AccelConfig(speculative_tokens=K)))
    res = ctl.run_speculative_decode(PagedLM(engine.model, 32, 4), NgramDrafter(1, 3), prompt, sp)
    assert res.token_ids == plain
    ctl.setup(EngineConfig())
    with pytest.raises(ConfigError, match="speculative_tokens"):
        ctl.run_speculative_decode(PagedLM(engine.model, 32, 4), NgramDrafter(1, 3), prompt, sp)


def test_external_verify_plans_are_rejected(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    engine = engine_for(folder, accel_for("ngram", folder))
    engine.add_request(Request("x", prompts_of([2])[0], SamplingParams(max_tokens=4)))
    engine.step()
    state = engine.snapshot()
    from sagellm.scheduler_ir.types import StepDecision

    graph = engine.builder.build(StepDecision((("x", 1),)), state, {"x": 2})
    plan = ExecutionPlan.of("ext", graph, engine.instance_id)
    assert "verify" in engine.check_plan(plan)
    with pytest.raises(PlanRejectedError):
        engine.step(plan)


def test_bad_speculative_config(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    other = random_checkpoint(tmp_path, hidden_size=64, num_layers=1, vocab_size=300)
    bad = AccelConfig(
        speculative_tokens=2, speculative_method="draft_model", draft_model=str(other)
    )
    with pytest.raises(ConfigError, match=r"accel\.draft_model.*vocabulary of 300"):
        engine_for(folder, bad)
    with pytest.raises(ConfigError, match=r"accel\.draft_model"):
        engine_for(
            folder,
            AccelConfig(
                speculative_tokens=2,
                speculative_method="draft_model",
                draft_model=str(tmp_path / "missing"),
            ),
        )
    with pytest.raises(ConfigError, match=r"speculative_skip_layers"):
        engine_for(
            folder,
            AccelConfig(
                speculative_tokens=2,
                speculative_method="layer_skip",
                speculative_skip_layers=(0, 1),
            ),
        )
    with pytest.raises(ConfigError, match=r"speculative_draft_layers"):
        engine_for(
            folder,
            AccelConfig(
                speculative_tokens=2, speculative_method="draft_model", speculative_draft_layers=2
            ),
        )
    for acc, msg in [
        ({"speculative_method": "medusa"}, "known: draft_model, layer_skip, ngram"),
        (
            {"speculative_method": "draft_model", "speculative_draft_quantization": "gptq"},
            "speculative_draft_quantization 'gptq'; known: fp8, int4, int8",
        ),
        (
            {"speculative_method": "ngram", "speculative_draft_quantization": "int8"},
            "applies to speculative_method 'draft_model'",
        ),
        ({"speculative_tokens": 0}, r"speculative_tokens.*greater than or equal to 1"),
        ({"speculative_ngram_min_tokens": 3, "speculative_ngram_max_tokens": 2}, "ngram_min"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_config({"accel": acc}, EngineConfig, "engine")
