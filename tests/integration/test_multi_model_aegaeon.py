"""MultiModelEngine under the aegaeon strategy: two DIFFERENT tiny checkpoints (different sizes,
different weights) behind one engine whose weight budget holds one model at a time. Every
request's tokens equal HF greedy of its own model; switches really load weights (timed) and
the strategy's switch-cost estimate sees them."""

import pytest
import torch
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import MultiModelEngine
from sagellm.scheduler_ir.strategies import AegaeonStrategy

SP = SamplingParams(max_tokens=8, ignore_eos=True)
SIZES = {
    "small": dict(hidden_size=64, num_hidden_layers=2),
    "big": dict(hidden_size=96, num_hidden_layers=3),
}


def _tiny(seed: int, hidden_size: int, num_hidden_layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=256,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.2,  # wide top-2 logit gaps: fp32 reorderings cannot flip a token
        eos_token_id=None,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """name -> (hf model, checkpoint folder)."""
    out = {}
    for seed, (name, size) in enumerate(SIZES.items()):
        model = _tiny(seed + 11, **size)
        folder = tmp_path_factory.mktemp(f"mm-{name}")
        model.save_pretrained(folder)
        out[name] = (model, folder)
    return out


def make_engine(two_models, budget=None, strategy=None) -> MultiModelEngine:
    cfgs = {
        name: EngineConfig(
            model=ModelConfig(path=str(folder)),
            block_size_tokens=4,
            num_kv_blocks=64,
            max_num_seqs=8,
            num_threads=1,
        )
        for name, (_, folder) in two_models.items()
    }
    return MultiModelEngine(cfgs, weight_budget_bytes=budget, strategy=strategy)


def drive(engine, jobs, stagger=2):
    """Add ``(rid, model, prompt)`` one every ``stagger`` steps; step to the end, checking the
    weight budget after every step."""
    pending, steps = list(jobs), 0
    while pending or engine.has_unfinished():
        if pending and steps % stagger == 0:
            rid, model, p = pending.pop(0)
            engine.add_request(Request(rid, p, SP, model=model))
        engine.step()
        steps += 1
        assert engine.resident_weight_bytes() <= engine.weight_budget_bytes
    return steps


def jobs_of(n=8):
    prompts = prompts_of([5, 17, 3, 11, 9, 2, 14, 6][:n], seed=5)
    return [(f"r{i}", "small" if i % 2 else "big", p) for i, p in enumerate(prompts)]


def test_each_request_equals_hf_of_its_own_model_one_model_resident(two_models):
    eng = make_engine(two_models)
    sizes = eng.weight_bytes
    assert sizes["big"] > sizes["small"]
    assert eng.weight_budget_bytes == sizes["big"] < sizes["big"] + sizes["small"]
    jobs = jobs_of()
    drive(eng, jobs)
    differ = 0
    for rid, model, p in jobs:
        ref = hf_reference(two_models[model][0], p, SP.max_tokens)[0]
        other = "small" if model == "big" else "big"
        differ += ref != hf_reference(two_models[other][0], p, SP.max_tokens)[0]
        assert eng.output_token_ids(rid) == ref, (rid, model)
    assert differ == len(jobs)  # the two models really disagree: a misroute would show
    # switches happened, each a timed real load that dropped the other model
    assert len(eng.switches) >= 4
    assert all(s.load_s > 0 for s in eng.switches)
    assert all(s.from_models and s.to_model not in s.from_models for s in eng.switches[1:])
    assert {s.to_model for s in eng.switches} == {"small", "big"}
    assert eng.stats()["num_switches"] == len(eng.switches)
    assert len(eng.resident_models()) == 1


def test_strategy_switch_cost_measures_weight_loads(two_models):
    strategy = AegaeonStrategy(tpot_slo_s=0.1)
    eng = make_engine(two_models, strategy=strategy)
    drive(eng, jobs_of(), stagger=1)
    mean_load = sum(s.load_s for s in eng.switches) / len(eng.switches)
    assert strategy.switch_s > strategy.min_switch_s
    assert strategy.c0_s(2) > 2 * strategy.min_switch_s
    # the EMA follows the loads: same order of magnitude as the measured mean
    assert mean_load / 10 < strategy.switch_s < mean_load * 10


def test_budget_for_both_models_loads_each_once(two_models):
    probe = make_engine(two_models)
    both = sum(probe.weight_bytes.values())
    eng = make_engine(two_models, budget=both)
    jobs = jobs_of(6)
    drive(eng, jobs)
    # construction leaves the last model resident; the first one is loaded once, never dropped
    assert [s.to_model for s in eng.switches] == ["small"]
    assert eng.switches[0].from_models == ()
    assert sorted(eng.resident_models()) == ["big", "small"]
    for rid, model, p in jobs:
        assert eng.output_token_ids(rid) == hf_reference(two_models[model][0], p, SP.max_tokens)[0]


def test_unknown_model_is_rejected_and_engine_keeps_serving(two_models):
    eng = make_engine(two_models)
    p = prompts_of([7], seed=9)[0]
    with pytest.raises(
        InvalidRequestError, match=r"unknown model 'gpt-9'; known: \['small', 'big'\]"
    ):
        eng.add_request(Request("bad", p, SP, model="gpt-9"))
    eng.add_request(Request("ok", p, SP, model="small"))
    with pytest.raises(InvalidRequestError, match="already in use"):
        eng.add_request(Request("ok", p, SP, model="big"))
    while eng.has_unfinished():
        eng.step()
    assert eng.output_token_ids("ok") == hf_reference(two_models["small"][0], p, SP.max_tokens)[0]


def test_abort_returns_final_output_and_others_finish(two_models):
    eng = make_engine(two_models)
    ps = prompts_of([6, 8], seed=4)
    eng.add_request(Request("a", ps[0], SP, model="big"))
    eng.add_request(Request("b", ps[1], SP, model="small"))
    eng.step()
    assert eng.abort("a")
    outs = []
    while eng.has_unfinished():
        outs.extend(eng.step())
    assert [o.finish_reason for o in outs if o.request_id == "a"] == ["abort"]
    ref = hf_reference(two_models["small"][0], ps[1], SP.max_tokens)[0]
    assert eng.output_token_ids("b") == ref


def test_budget_below_the_largest_model_is_refused(two_models):
    with pytest.raises(ValueError, match="weight_budget_bytes"):
        make_engine(two_models, budget=1024)


def test_generate_runs_prompts_on_the_named_model(two_models):
    eng = make_engine(two_models)
    ps = prompts_of([5, 9], seed=6)
    for model in ("small", "big", "small"):
        got = eng.generate(ps, SP, model=model)
        assert got == [hf_reference(two_models[model][0], p, SP.max_tokens)[0] for p in ps]
