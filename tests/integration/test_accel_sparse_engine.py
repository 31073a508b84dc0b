"""Sparse attention inside the native engine on a tiny random Llama (GQA: 4 heads, 2 KV heads).

Proves: nothing dropped = dense (and HF) token for token; Quest's selection path equals dense
for a sequence it fully covers; StreamingLLM frees blocks (exact pool counts) and runs a request
longer than the pool; composition with chunked prefill, strategies, preemption and prefix
caching; teacher-forced decode logits equal HF's; bad input.
"""

import pytest
import torch

from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig, parse_config
from sagellm.core.errors import ConfigError, InvalidRequestError
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.native.kv_handoff import transfer_prefilled

BS = 4


def prompts_of(lengths, seed=3, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def engine(folder, accel: dict | None = None, **kw) -> NativeEngine:
    kw.setdefault("num_kv_blocks", 128)
    acc = AccelConfig(enable_sparsity=accel is not None, **(accel or {}))
    cfg = EngineConfig(model=ModelConfig(path=str(folder)), block_size_tokens=BS, accel=acc, **kw)
    return NativeEngine(cfg)


def run(eng, prompts, n_new, tag="r"):
    """Outputs and the logits each was sampled from, all requests added at once."""
    eng.record_logits = True
    sp = SamplingParams(max_tokens=n_new, ignore_eos=True)
    ids = [f"{tag}{i}" for i in range(len(prompts))]
    for rid, p in zip(ids, prompts, strict=True):
        eng.add_request(Request(rid, p, sp))
    while eng.has_unfinished():
        eng.step()
    logits = [torch.stack(eng.recorded_logits[r]) for r in ids]
    return [eng.output_token_ids(r) for r in ids], logits


STREAM_ALL = {"sink_tokens": 4, "window_tokens": 1024}
QUEST_ALL = {"sparsity_method": "quest", "quest_top_k_blocks": 1000}


@pytest.mark.parametrize("accel", [STREAM_ALL, QUEST_ALL], ids=["streaming", "quest"])
def test_nothing_dropped_equals_dense_and_hf(tiny_checkpoint, accel):
    model, folder = tiny_checkpoint("llama")
    prompts = prompts_of([37, 5, 22])
    dense_tok, dense_lg = run(engine(folder), prompts, 10)
    tok, lg = run(engine(folder, accel, max_num_batched_tokens=16), prompts, 10)
    ref_tok, _ = run(engine(folder, max_num_batched_tokens=16), prompts, 10)
    assert tok == dense_tok == ref_tok
    with torch.inference_mode():
        hf = model.generate(torch.tensor([prompts[0]]), max_new_tokens=10, do_sample=False)
    assert tok[0] == hf[0, len(prompts[0]) :].tolist()
    for a, b in zip(lg, dense_lg, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_quest_selection_path_equals_dense_for_a_covered_sequence(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    long, short = prompts_of([120, 9])  # 30 complete blocks vs at most 5 (<= k = 6)
    dense_tok, dense_lg = run(engine(folder), [long, short], 12)
    eng = engine(folder, {"sparsity_method": "quest", "quest_top_k_blocks": 6})
    tok, lg = run(eng, [long, short], 12)
    assert eng.stats()["sparse_decode_steps"] >= 11  # the selection path ran
    assert eng.stats()["sparse_summarised_blocks"] >= 30
    assert tok[1] == dense_tok[1]
    torch.testing.assert_close(lg[1], dense_lg[1], atol=1e-5, rtol=0)
    assert not torch.equal(lg[0], dense_lg[0])  # the long one really attended fewer blocks


def test_streaming_frees_blocks_exactly(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    sinks, window, n_prompt = 4, 16, 40
    eng = engine(folder, {"sink_tokens": sinks, "window_tokens": window})
    dense = engine(folder)
    sp = SamplingParams(max_tokens=30, ignore_eos=True)
    (p,) = prompts_of([n_prompt])
    for e in (eng, dense):
        e.add_request(Request("r", p, sp))
    used, used_dense = [], []
    while eng.has_unfinished():
        eng.step()
        dense.step()
        used.append(eng.kv.num_referenced_blocks)
        used_dense.append(dense.kv.num_referenced_blocks)
        seq = eng.queues.running[0] if eng.queues.running else None
        if seq is not None:
            c = seq.num_computed_tokens
            # live: block 0 (sinks) + blocks holding keys > c - window, up to the last one
            first_live = (c - window + 1) // BS
            expect = 1 + (-(-c // BS) - first_live)
            assert used[-1] == expect == sum(b is not None for b in seq.block_ids)
            assert eng.kv.quota.usage_blocks(seq.request.tenant_id) == expect
    last = n_prompt + 29  # tokens computed by the final step (which then frees the rest)
    assert max(used) <= 1 + window // BS + 1 < max(used_dense) == (last - 1) // BS
    assert eng.kv.num_referenced_blocks == 0
    assert eng.kv.pool.num_free_blocks == eng.kv.num_blocks
    live_at_end = 1 + -(-last // BS) - (last - window + 1) // BS
    assert eng.stats()["sparse_freed_blocks"] == -(-last // BS) - live_at_end


def test_streaming_runs_a_request_longer_than_the_pool(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    acc = {"sink_tokens": 4, "window_tokens": 12}
    (p,) = prompts_of([30])
    sp = SamplingParams(max_tokens=60, ignore_eos=True)  # 90 tokens = 23 blocks > 12
    with pytest.raises(InvalidRequestError, match="num_kv_blocks"):
        engine(folder, num_kv_blocks=12).add_request(Request("r", p, sp))
    small = engine(folder, acc, num_kv_blocks=12, max_num_batched_tokens=8)
    big = engine(folder, acc, max_num_batched_tokens=8)
    assert run(small, [p], 60)[0] == run(big, [p], 60)[0]


def test_streaming_output_does_not_depend_on_chunking_or_strategy(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    acc = {"sink_tokens": 4, "window_tokens": 10}
    prompts = prompts_of([45, 12, 31])
    ref_tok, ref_lg = run(engine(folder, acc), prompts, 12)
    for kw in (
        {"max_num_batched_tokens": 7},
        {"scheduling_strategy": "priority"},
        {"scheduling_strategy": "lpm", "max_num_batched_tokens": 16},
    ):
        tok, lg = run(engine(folder, acc, **kw), prompts, 12)
        assert tok == ref_tok, kw
        for a, b in zip(lg, ref_lg, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_streaming_survives_preemption(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    acc = {"sink_tokens": 4, "window_tokens": 8}
    prompts = prompts_of([10, 10, 10])
    ref, _ = run(engine(folder, acc), prompts, 24)
    eng = engine(folder, acc, num_kv_blocks=9)  # 3 x 4 live blocks do not fit
    tok, _ = run(eng, prompts, 24)
    assert tok == ref
    assert sum(m.preemptions for m in eng.request_metrics()) >= 1
    assert eng.kv.num_referenced_blocks == 0


def test_quest_with_prefix_caching_equals_without(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    acc = {"sparsity_method": "quest", "quest_top_k_blocks": 2}
    prefix = prompts_of([40])[0]
    prompts = [[*prefix, 7, 8, 9], [*prefix, 1, 2]]
    outs = {}
    for cache in (False, True):
        eng = engine(folder, acc, enable_prefix_caching=cache)
        # one after the other: the second request hits the first one's blocks
        outs[cache] = [run(eng, [p], 10, f"p{i}-")[0][0] for i, p in enumerate(prompts)]
        if cache:
            assert eng.request_metrics()[-1].num_cached_tokens == 40
    assert outs[True] == outs[False]


def test_decode_logits_equal_hf_teacher_forced(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    ids = prompts_of([30])[0]
    got = engine(folder).decode_logits(ids[:20], ids[20:])
    with torch.inference_mode():
        ref = model(torch.tensor([ids])).logits[0, 19:-1]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_bad_input_names_fields(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    with pytest.raises(ConfigError, match="enable_prefix_caching"):
        engine(folder, {"sink_tokens": 4, "window_tokens": 8}, enable_prefix_caching=True)
    bad = {"enable_sparsity": True, "sink_tokens": 8, "window_tokens": 8}
    with pytest.raises(ConfigError, match=r"engine\.accel.*window_tokens"):
        parse_config({"engine": {"accel": bad}})
    with pytest.raises(ConfigError, match="known: quest, streaming"):
        parse_config({"engine": {"accel": {"sparsity_method": "h2o"}}})
    with pytest.raises(ConfigError, match="quest_top_k_blocks"):
        parse_config({"engine": {"accel": {"quest_top_k_blocks": 0}}})
    streaming = engine(folder, {"sink_tokens": 4, "window_tokens": 8})
    with pytest.raises(ValueError, match="sparsity_method 'streaming'"):
        transfer_prefilled(streaming, engine(folder), "r0")
    eng = engine(folder, {"sparsity_method": "quest"})
    with pytest.raises(InvalidRequestError, match="target_ids"):
        eng.decode_logits([1, 2], [])
    eng.add_request(Request("busy", [1, 2, 3], SamplingParams(max_tokens=2)))
    with pytest.raises(InvalidRequestError, match="idle"):
        eng.set_sparse_attention(AccelConfig())
