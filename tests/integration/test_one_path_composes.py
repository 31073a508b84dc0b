"""Every strategy on the one engine path composes with prefix caching, KV tiers and tenant
quotas: greedy outputs equal HF fp32 and each request reuses exactly the cached prompt tokens
it reuses under fifo (the engine's default path)."""

import pytest
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

STRATEGIES = ["fifo", "priority", "slo_aware", "lpm", "hybrid", "adaptive", "aegaeon"]
SP = SamplingParams(max_tokens=4, ignore_eos=True)


@pytest.fixture(scope="module")
def workload(tiny_checkpoint):
    model, folder = tiny_checkpoint("llama")
    prefixes = prompts_of([16, 12, 16], seed=21)  # three system prompts: 4, 3, 4 blocks of 4
    tails = prompts_of([3, 6, 2, 5, 7, 1, 4, 6, 3], seed=22)
    prompts = [prefixes[i % 3] + t for i, t in enumerate(tails)]
    refs = [hf_reference(model, p, SP.max_tokens)[0] for p in prompts]
    return folder, prompts, refs


def serve(folder, prompts, strategy, stagger=3, sp=SP, **kw):
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        enable_prefix_caching=True,
        scheduling_strategy=strategy,
        **kw,
    )
    pending = list(enumerate(prompts))
    steps = 0
    while pending or eng.has_unfinished():
        if pending and steps % stagger == 0:  # earlier requests' prefixes are cached by then
            i, p = pending.pop(0)
            eng.add_request(Request(f"r{i}", p, sp, tenant_id=f"t{i % 2}", priority=i % 3))
        eng.step()
        steps += 1
    outs = [eng.output_token_ids(f"r{i}") for i in range(len(prompts))]
    cached = {m.request_id: m.num_cached_tokens for m in eng.request_metrics()}
    eng.close()
    return outs, cached, eng


# Under memory pressure the order a strategy picks changes what is evicted; a request every 6
# steps (each finishes before the next arrives) keeps every strategy's cache history equal, so
# the hits must be too, while demotion, load-back and the quota act on every strategy's path.
CASES = {
    "device": dict(stagger=3, num_kv_blocks=64),
    "tiers_and_quota": dict(
        stagger=6,
        num_kv_blocks=9,  # one request fits, the 3 prefixes do not: host, disk and back
        host_tier_blocks=3,
        disk_tier_blocks=64,
        tenant_quotas={"t1": {"hard_blocks": 8}},
        prefix_cache_per_tenant=False,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_strategy_equals_hf_and_reuses_what_fifo_reuses(workload, tmp_path, case):
    folder, prompts, refs = workload
    kw = dict(CASES[case])
    if "disk_tier_blocks" in kw:
        kw["kv_cache_dir"] = str(tmp_path / "kv")
    base_outs, base_cached, base = serve(folder, prompts, "fifo", **kw)
    assert base_outs == refs
    assert sum(base_cached.values()) >= 40  # the prefixes were reused (salted per tenant)
    if case != "device":
        st = base.stats()
        assert st["num_demoted_blocks"] > 0 and st["num_loaded_blocks"] > 0
    for strategy in STRATEGIES[1:]:
        outs, cached, _ = serve(folder, prompts, strategy, **kw)
        assert outs == refs, strategy
        assert cached == base_cached, strategy


def test_overlapped_tier_loads_equal_hf_and_hide_load_time(workload, tmp_path):
    folder, prompts, refs = workload
    kw = dict(CASES["tiers_and_quota"], kv_cache_dir=str(tmp_path / "kv"), stagger=2)
    kw["num_kv_blocks"] = 14  # room for a decode beside a load
    outs, _, eng = serve(folder, prompts, "fifo", overlap_kv_loads=True, **kw)
    assert outs == refs
    steps = eng.step_metrics()
    assert eng.stats()["num_loaded_blocks"] > 0
    assert sum(s.kv_load_hidden_s for s in steps) > 0  # reads ran during a forward
    plain_outs, _, plain = serve(folder, prompts, "fifo", **kw)
    assert plain_outs == refs  # (hits may differ: an overlapped load defers its forward a step)
    assert sum(s.kv_load_hidden_s for s in plain.step_metrics()) == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_requests_sharing_a_prefix_at_once_compute_it_once_through_the_cascade(
    tiny_checkpoint, strategy, monkeypatch
):
    """Four prompts with one 16-token prefix, submitted together, with tiers and a quota on:
    the first computes the prefix, the others wait a step and hit it (prefill_dedup; both
    thresholds lowered to this small model), and
    their 18-30-token chunks attend the cached prefix through the cascade; outputs equal HF."""
    from sagellm.engines.native import attention_cascade, prefill_dedup

    monkeypatch.setattr(attention_cascade, "MIN_SHARED_TOKENS", 8)
    monkeypatch.setattr(prefill_dedup, "MIN_DEFER_TOKENS", 4)
    calls = []
    merge = attention_cascade.merge
    monkeypatch.setattr(attention_cascade, "merge", lambda *a: calls.append(1) or merge(*a))
    model, folder = tiny_checkpoint("llama")
    prefix = prompts_of([16], seed=31)[0]
    prompts = [prefix + t for t in prompts_of([20, 24, 18, 30], seed=32)]
    refs = [hf_reference(model, p, SP.max_tokens)[0] for p in prompts]
    eng = NativeEngine.from_pretrained(
        folder,
        block_size_tokens=4,
        enable_prefix_caching=True,
        scheduling_strategy=strategy,
        num_kv_blocks=64,
        host_tier_blocks=8,
        tenant_quotas={"t1": {"hard_blocks": 40}},
        prefix_cache_per_tenant=False,
        max_num_batched_tokens=256,
    )
    for i, p in enumerate(prompts):
        eng.add_request(Request(f"r{i}", p, SP, tenant_id=f"t{i % 2}", priority=i % 3))
    while eng.has_unfinished():
        eng.step()
    assert [eng.output_token_ids(f"r{i}") for i in range(len(prompts))] == refs
    assert calls, "no group took the cascade"
    assert sorted(m.num_cached_tokens for m in eng.request_metrics()) == [0, 16, 16, 16]
    eng.close()
