"""PD separation with two native engines in one process: prefill on one, KV blocks copied,
decode on the other; greedy outputs equal HF, including the boundary cases."""

import pytest
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.native.kv_handoff import check_compatible, transfer_prefilled
from sagellm.scheduler_ir.pd_runtime import PDRuntime


def pd(folder, decode_blocks=64, **kw):
    p = NativeEngine.from_pretrained(folder, block_size_tokens=4, **kw)
    d = NativeEngine.from_pretrained(folder, block_size_tokens=4, num_kv_blocks=decode_blocks)
    check_compatible(p, d)
    p.instance_id, d.instance_id = "prefill-0", "decode-0"
    return PDRuntime(p, d, transfer_prefilled)


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_pd_outputs_equal_hf_with_boundaries(tiny_checkpoint, family):
    model, folder = tiny_checkpoint(family)
    # 1-token prompt, exactly one block, more than one block, and a max_tokens=1 request
    prompts = prompts_of([1, 4, 11, 7], seed=5)
    max_tokens = [6, 6, 6, 1]
    rt = pd(folder, max_num_batched_tokens=8)
    for i, (p, n) in enumerate(zip(prompts, max_tokens, strict=True)):
        rt.add_request(Request(f"r{i}", p, SamplingParams(max_tokens=n, ignore_eos=True)))
    finished = {}
    while rt.has_unfinished():
        for o in rt.step():
            if o.finished:
                finished[o.request_id] = o.finish_reason
    assert finished == {f"r{i}": "length" for i in range(4)}
    for i, (p, n) in enumerate(zip(prompts, max_tokens, strict=True)):
        assert rt.output_token_ids(f"r{i}") == hf_reference(model, p, n)[0], i
    assert rt.num_transfers == 3  # r3 finished on the prefill instance
    # decode never ran on the prefill instance, prefill never on the decode instance
    # the prefill instance computed exactly the prompts, the decode instance the rest
    assert sum(s.num_batched_tokens for s in rt.prefill.step_metrics()) == 1 + 4 + 11 + 7
    assert sum(s.num_batched_tokens for s in rt.decode.step_metrics()) == 3 * 5
    assert all(s.num_prefill_tokens == 0 for s in rt.decode.step_metrics())
    assert rt.prefill.kv.num_referenced_blocks == 0 == rt.decode.kv.num_referenced_blocks
    metrics = {m.request_id: m for m in rt.request_metrics()}
    assert sorted(metrics) == ["r0", "r1", "r2", "r3"]
    assert all(m.num_output_tokens == n for m, n in zip(
        [metrics[f"r{i}"] for i in range(4)], max_tokens, strict=True))  # fmt: skip


def test_transfer_waits_for_decode_blocks(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    prompts = prompts_of([8, 8], seed=6)
    rt = pd(folder, decode_blocks=4)  # room for one 8-token prompt + its decode at a time
    for i, p in enumerate(prompts):
        rt.add_request(Request(f"r{i}", p, SamplingParams(max_tokens=5, ignore_eos=True)))
    while rt.has_unfinished():
        rt.step()
    for i, p in enumerate(prompts):
        assert rt.output_token_ids(f"r{i}") == hf_reference(model, p, 5)[0]
