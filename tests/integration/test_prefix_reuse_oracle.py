"""Prefix reuse, tiers, migration and defrag never change greedy outputs (vs HF fp32 and vs
all of them off), and a hit really skips prefill work."""

import pytest
import torch

from sagellm.benchmarks.hf_reference import hf_greedy
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

N_NEW = 6
SP = SamplingParams(max_tokens=N_NEW, ignore_eos=True)


def rand(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), generator=g).tolist()


SHARED = rand(40, 1)
SHARED_PROMPTS = [SHARED + rand(k, 10 + k) for k in (3, 9, 1, 17)]


@pytest.fixture(scope="module")
def llama(tiny_checkpoint):
    return tiny_checkpoint("llama")


def run_one_by_one(engine, prompts, tenant="default"):
    outs = []
    for i, p in enumerate(prompts):
        rid = f"{tenant}-{len(engine.request_metrics())}-{i}"
        engine.add_request(Request(rid, p, SP, tenant_id=tenant))
        while engine.has_unfinished():
            engine.step()
        outs.append(engine.output_token_ids(rid))
    return outs


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_shared_prefix_hits_skip_prefill_and_match_hf(tiny_checkpoint, family):
    model, folder = tiny_checkpoint(family)
    on = NativeEngine.from_pretrained(folder, block_size_tokens=8, enable_prefix_caching=True)
    off = NativeEngine.from_pretrained(folder, block_size_tokens=8)
    outs_on = run_one_by_one(on, SHARED_PROMPTS)
    assert outs_on == run_one_by_one(off, SHARED_PROMPTS)
    assert outs_on == hf_greedy(model, SHARED_PROMPTS, N_NEW, ignore_eos=True)
    cached = [m.num_cached_tokens for m in on.request_metrics()]
    assert cached == [0, 40, 40, 40]  # 5 full blocks of the 40 shared tokens
    prefill_on = sum(s.num_prefill_tokens + s.num_decode_tokens for s in on.step_metrics())
    prefill_off = sum(s.num_prefill_tokens + s.num_decode_tokens for s in off.step_metrics())
    assert prefill_off - prefill_on == 3 * 40
    assert on.kv.num_referenced_blocks == 0 and on.kv.pool.num_cached_blocks > 0
    stats = on.stats()
    assert stats["prefix_request_hit_rate"] == 0.75


def test_concurrent_batch_with_chunking_and_preemption(llama):
    model, folder = llama
    prompts = [*SHARED_PROMPTS, rand(30, 3), SHARED + rand(2, 4)]
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_kv_blocks=20,
        max_num_batched_tokens=32,
        enable_prefix_caching=True,
    )
    outs = eng.generate(prompts, SP)
    assert outs == hf_greedy(model, prompts, N_NEW, ignore_eos=True)
    assert sum(m.preemptions for m in eng.request_metrics()) >= 1
    assert eng.kv.num_referenced_blocks == 0
    # the second wave reuses what the first left cached
    again = eng.generate(prompts, SP)
    assert again == outs
    assert sum(m.num_cached_tokens for m in eng.request_metrics()[-len(prompts) :]) > 0


def test_exact_block_prompt_recomputes_last_token(llama):
    model, folder = llama
    eng = NativeEngine.from_pretrained(folder, block_size_tokens=8, enable_prefix_caching=True)
    p = rand(32, 7)  # exactly 4 blocks: the hit is capped at 3 blocks
    first = eng.generate([p], SP)
    eng.add_request(Request("again", p, SP))
    while eng.has_unfinished():
        eng.step()
    assert eng.output_token_ids("again") == first[0] == hf_greedy(model, [p], N_NEW, True)[0]
    assert eng.request_metrics()[-1].num_cached_tokens == 24


def test_tiers_demote_and_load_back_with_defrag(llama, tmp_path):
    """A 12-block device pool forces demotion to a 2-block host tier and then to disk; the
    shared prefix comes back from host/disk instead of being recomputed."""
    model, folder = llama
    cfg = dict(block_size_tokens=4, num_kv_blocks=16, enable_prefix_caching=True)
    tiers = dict(host_tier_blocks=2, disk_tier_blocks=32, kv_cache_dir=str(tmp_path))
    eng = NativeEngine.from_pretrained(folder, **cfg, **tiers, defrag_fragmentation_threshold=0.2)
    plain = NativeEngine.from_pretrained(folder, block_size_tokens=4, num_kv_blocks=16)
    first = [*SHARED[:24], 5]
    flood = [rand(40, 20 + i) for i in range(3)]
    second = SHARED[:24] + rand(6, 99)
    prompts = [first, *flood, second]
    outs = run_one_by_one(eng, prompts)
    assert outs == run_one_by_one(plain, prompts)
    assert outs == hf_greedy(model, prompts, N_NEW, ignore_eos=True)
    st = eng.stats()
    assert st["num_demoted_blocks"] > 0 and st["num_loaded_blocks"] > 0
    assert eng.request_metrics()[-1].num_cached_tokens == 24
    assert eng.kv.migrator.stats[("disk", "device")].num_blocks > 0
    assert any(s.kv_load_s > 0 for s in eng.step_metrics())
    eng.close()


def test_corrupted_disk_block_is_a_miss(llama, tmp_path):
    model, folder = llama
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        num_kv_blocks=16,
        enable_prefix_caching=True,
        disk_tier_blocks=32,
        host_tier_blocks=1,
        kv_cache_dir=str(tmp_path),
    )
    first = [*SHARED[:24], 5]
    run_one_by_one(eng, [first, *[rand(40, 30 + i) for i in range(3)]])
    files = list(tmp_path.glob("*/blk-*.kv"))
    assert files, "nothing was demoted to disk"
    for f in files:
        raw = bytearray(f.read_bytes())
        raw[-3] ^= 0x5A
        f.write_bytes(bytes(raw))
    second = SHARED[:24] + rand(6, 98)
    (out,) = run_one_by_one(eng, [second])
    assert out == hf_greedy(model, [second], N_NEW, ignore_eos=True)[0]
    assert eng.stats()["num_load_failures"] >= 1
    eng.close()


def test_defragment_between_steps_keeps_outputs(llama):
    model, folder = llama
    eng = NativeEngine.from_pretrained(
        folder, block_size_tokens=4, num_kv_blocks=64, enable_prefix_caching=True
    )
    prompts = [rand(n, 40 + n) for n in (9, 23, 5, 30)]
    for i, p in enumerate(prompts):
        eng.add_request(Request(f"d{i}", p, SP))
    eng.step()
    eng.abort("d1")  # leaves holes in the middle of the pool
    moved = 0
    while eng.has_unfinished():
        moved += eng.defragment().num_moved_blocks
        assert eng.kv.pool.get_fragmentation() == 0.0
        eng.step()
    assert moved > 0
    keep = [0, 2, 3]
    refs = hf_greedy(model, [prompts[i] for i in keep], N_NEW, ignore_eos=True)
    assert [eng.output_token_ids(f"d{i}") for i in keep] == refs


def one_step_engine(folder, **kw):
    """Prefix caching, 8-token blocks, room for every test prompt in one step."""
    return NativeEngine.from_pretrained(
        folder, block_size_tokens=8, max_num_batched_tokens=512, enable_prefix_caching=True, **kw
    )


@pytest.fixture
def defer_short_shares(monkeypatch):
    from sagellm.engines.native import prefill_dedup

    monkeypatch.setattr(prefill_dedup, "MIN_DEFER_TOKENS", 8)


@pytest.mark.parametrize("strategy", ["fifo", "lpm", "priority"])
def test_requests_admitted_together_compute_their_shared_prefix_once(
    llama, strategy, defer_short_shares
):
    """Four prompts sharing 40 tokens (5 blocks), submitted at once with room for all in one
    step (deferral threshold lowered to one block): the first computes the prefix, the others
    wait one step and hit it (not compute it again in the same step); outputs equal HF."""
    model, folder = llama
    eng = one_step_engine(folder, scheduling_strategy=strategy)
    outs = eng.generate(SHARED_PROMPTS, SP)
    assert outs == hf_greedy(model, SHARED_PROMPTS, N_NEW, ignore_eos=True)
    first = eng.step_metrics()[0]
    assert first.num_prefill_tokens == len(SHARED_PROMPTS[0])  # only one request's prompt
    computed = sum(s.num_prefill_tokens + s.num_decode_tokens for s in eng.step_metrics())
    unique = sum(len(p) - 40 for p in SHARED_PROMPTS)
    assert computed == 40 + unique + len(SHARED_PROMPTS) * (N_NEW - 1)
    assert [m.num_cached_tokens for m in eng.request_metrics()] == [0, 40, 40, 40]


def test_a_prompt_sharing_nothing_is_not_deferred(llama, defer_short_shares):
    model, folder = llama
    prompts = [SHARED_PROMPTS[0], rand(20, 77), SHARED_PROMPTS[1]]
    eng = one_step_engine(folder)
    assert eng.generate(prompts, SP) == hf_greedy(model, prompts, N_NEW, ignore_eos=True)
    first = eng.step_metrics()[0]
    assert first.num_prefill_tokens == len(prompts[0]) + len(prompts[1])


def test_a_share_shorter_than_the_threshold_is_recomputed_not_deferred(llama):
    """40 shared tokens < MIN_DEFER_TOKENS: all four prompts run in the first step (the
    prefix computed four times) and still equal HF."""
    model, folder = llama
    eng = one_step_engine(folder)
    assert eng.generate(SHARED_PROMPTS, SP) == hf_greedy(
        model, SHARED_PROMPTS, N_NEW, ignore_eos=True
    )
    assert eng.step_metrics()[0].num_prefill_tokens == sum(len(p) for p in SHARED_PROMPTS)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_cascade_prefill_over_a_shared_prefix_matches_hf(tiny_checkpoint, family, monkeypatch):
    """Chunks of 20+ new tokens over a 40-token cached prefix all sequences share go through
    the cascade (prefix attended once, merged by log-sum-exp); greedy outputs equal HF."""
    from sagellm.engines.native import attention_cascade, prefill_dedup

    monkeypatch.setattr(attention_cascade, "MIN_SHARED_TOKENS", 16)
    monkeypatch.setattr(prefill_dedup, "MIN_DEFER_TOKENS", 8)
    calls = []
    merge = attention_cascade.merge
    monkeypatch.setattr(attention_cascade, "merge", lambda *a: calls.append(1) or merge(*a))
    model, folder = tiny_checkpoint(family)
    prompts = [SHARED + rand(n, 30 + n) for n in (20, 25, 31)]
    eng = one_step_engine(folder)
    assert eng.generate(prompts, SP) == hf_greedy(model, prompts, N_NEW, ignore_eos=True)
    assert calls  # the second step's group (two sequences, 40 shared tokens) took the cascade
