"""Multi-step decode (``num_decode_steps``, decode_burst.py) on the engine's one path: greedy
tokens equal HF fp32 with bursts on, alone and with prefix caching, KV tiers, tenant quotas,
every strategy and speculative decoding; a burst ends at a stop token and never passes
max_tokens; each token keeps its own time and each burst step its own metrics record."""

import pytest
import torch
from test_one_path_composes import CASES, STRATEGIES, serve
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.config import AccelConfig
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.native.kernels import decode_burst_op

pytestmark = pytest.mark.skipif(decode_burst_op() is None, reason="C++ kernels not built here")


def run(eng, prompts, sp, stagger=0, **request_kw):
    pending = [(f"r{i}", p) for i, p in enumerate(prompts)]
    steps = 0
    while pending or eng.has_unfinished():
        if pending and (stagger == 0 or steps % stagger == 0):
            rid, p = pending.pop(0)
            eng.add_request(Request(rid, p, sp, **request_kw))
            if stagger == 0:
                continue
        eng.step()
        steps += 1
    return [eng.output_token_ids(f"r{i}") for i in range(len(prompts))]


def plans_and_steps(eng) -> tuple[int, int]:
    return int(eng.ir_stats()["num_plans"]), len(eng.step_metrics())


@pytest.mark.parametrize("family", ["llama", "qwen2", "llama-d64"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_bursts_give_the_one_step_tokens_and_hf_in_fp32(tiny_checkpoint, family, dtype):
    model, folder = tiny_checkpoint(family)
    prompts = prompts_of([5, 17, 9, 30], seed=7)
    sp = SamplingParams(max_tokens=13, ignore_eos=True)  # not a multiple of the burst
    outs = {}
    for k in (1, 4):
        eng = NativeEngine.from_pretrained(
            folder, block_size_tokens=4, dtype=dtype, num_decode_steps=k
        )
        outs[k] = run(eng, prompts, sp, stagger=2)
        plans, steps = plans_and_steps(eng)
        assert (plans < steps) == (k > 1), (plans, steps)  # bursts ran, and only with k > 1
        for m in eng.request_metrics():
            assert len(m.token_times_s) == 13 and m.token_times_s == sorted(m.token_times_s)
        eng.close()
    assert outs[4] == outs[1]
    if dtype == "float32":
        assert outs[4] == [hf_reference(model, p, 13)[0] for p in prompts]


def test_a_burst_ends_at_a_stop_token_and_at_max_tokens(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    p0, p1 = prompts_of([6, 11], seed=3)
    ref0, ref1 = hf_reference(model, p0, 20)[0], hf_reference(model, p1, 7)[0]
    stop = ref0[5]
    want0 = ref0[: ref0.index(stop) + 1]
    eng = NativeEngine.from_pretrained(folder, block_size_tokens=4, num_decode_steps=8)
    eng.add_request(Request("a", p0, SamplingParams(max_tokens=20, stop_token_ids=(stop,))))
    eng.add_request(Request("b", p1, SamplingParams(max_tokens=7, ignore_eos=True)))
    while eng.has_unfinished():
        eng.step()
    assert eng.output_token_ids("a") == want0
    assert eng.output_token_ids("b") == ref1
    reasons = {m.request_id: m.finish_reason for m in eng.request_metrics()}
    assert reasons == {"a": "stop", "b": "length"}
    assert eng.kv.num_referenced_blocks == 0  # the burst's spare blocks went back too
    eng.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bursts_compose_with_prefix_caching_tiers_quotas_and_every_strategy(
    tiny_checkpoint, tmp_path, case
):
    model, folder = tiny_checkpoint("llama")
    prefixes = prompts_of([16, 12, 16], seed=21)
    tails = prompts_of([3, 6, 2, 5, 7, 1, 4, 6, 3], seed=22)
    prompts = [prefixes[i % 3] + t for i, t in enumerate(tails)]
    sp = SamplingParams(max_tokens=9, ignore_eos=True)
    refs = [hf_reference(model, p, 9)[0] for p in prompts]
    kw = dict(CASES[case])
    if "disk_tier_blocks" in kw:
        kw["kv_cache_dir"] = str(tmp_path / "kv")
    for strategy in STRATEGIES:
        outs, cached, eng = serve(folder, prompts, strategy, sp=sp, num_decode_steps=4, **kw)
        plans, records = plans_and_steps(eng)
        assert outs == refs, strategy
        assert sum(cached.values()) >= 40, strategy  # the prefixes were reused
        assert plans < records, strategy  # bursts ran


def test_bursts_give_way_to_speculative_and_sampled_requests(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    prompts = prompts_of([7, 12], seed=5)
    sp = SamplingParams(max_tokens=10, ignore_eos=True)
    refs = [hf_reference(model, p, 10)[0] for p in prompts]
    spec = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_decode_steps=4,
        accel=AccelConfig(speculative_tokens=3, speculative_method="ngram"),
    )
    assert run(spec, prompts, sp) == refs
    spec.close()
    eng = NativeEngine.from_pretrained(folder, block_size_tokens=4, num_decode_steps=4)
    sampled = SamplingParams(max_tokens=10, temperature=0.8, seed=1, ignore_eos=True)
    run(eng, prompts, sampled)
    plans, steps = plans_and_steps(eng)
    assert plans == steps  # a sampled request keeps the one-step path
    eng.close()


@pytest.mark.parametrize(
    ("positions", "table", "match"),
    [
        (torch.zeros(2, dtype=torch.int32), [[0], [0]], "positions a contiguous CPU int64"),
        (torch.tensor([3, 0]), [[0], [0]], r"sequence 0's positions 3..4 past its block_table"),
        (torch.tensor([0, 0]), [[0], [-1]], r"block_table\[1, 0\] = -1 is not a block"),
    ],
)
def test_a_bad_burst_names_the_field(positions, table, match):
    op = decode_burst_op()
    ids = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match=match):
        op(
            ids,
            positions,
            torch.tensor(table, dtype=torch.int64),
            2,
            torch.full((2, 1), -1, dtype=torch.int64),
            torch.zeros((8, 16)),
            [],
            torch.zeros((1, 2, 1, 1, 4, 16)),
            torch.zeros((8, 16)),
            torch.zeros((8, 16)),
            1,
            1e-5,
            0.25,
            1,
            2,
            3,
            4,
            torch.zeros(16),
            torch.zeros((8, 16)),
            torch.zeros(0),
            torch.zeros((2, 2), dtype=torch.int64),
            torch.zeros(2, dtype=torch.float64),
        )
