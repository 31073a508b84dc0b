"""The one engine path on CUDA with every lossless feature on together: prefix caching, each
scheduling strategy, host and disk KV tiers under memory pressure, a tenant quota and n-gram
speculative decoding. Greedy output equals HF transformers fp32 on CPU token for token
(skipped without CUDA)."""

import pytest
import torch

from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine

pytestmark = pytest.mark.gpu

STRATEGIES = ["fifo", "priority", "slo_aware", "lpm", "hybrid", "adaptive", "aegaeon"]
SP = SamplingParams(max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def workload(tiny_checkpoint):
    """(checkpoint folder, prompts, HF fp32 greedy tokens on CPU)."""
    model, folder = tiny_checkpoint("llama")
    g = torch.Generator().manual_seed(21)
    prefixes = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (16, 12, 16)]
    tails = [torch.randint(0, 256, (n,), generator=g).tolist() for n in (3, 6, 2, 5, 7, 1, 4, 6)]
    prompts = [prefixes[i % 3] + t for i, t in enumerate(tails)]
    n = SP.max_tokens
    refs = [
        model.generate(torch.tensor([p]), max_new_tokens=n, min_new_tokens=n, do_sample=False)[
            0, len(p) :
        ].tolist()
        for p in prompts
    ]
    return folder, prompts, refs


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cuda_everything_on_equals_hf(workload, tmp_path, strategy):
    folder, prompts, refs = workload
    cfg = EngineConfig(
        model=ModelConfig(path=str(folder)),
        device="cuda",
        block_size_tokens=4,
        num_kv_blocks=12,  # the 3 prefixes do not all fit: demoted to host, disk and back
        enable_prefix_caching=True,
        prefix_cache_per_tenant=False,
        host_tier_blocks=3,
        disk_tier_blocks=64,
        kv_cache_dir=str(tmp_path / "kv"),
        tenant_quotas={"t1": {"hard_blocks": 10}},
        scheduling_strategy=strategy,
        accel=AccelConfig(speculative_tokens=3, speculative_method="ngram"),
    )
    eng = NativeEngine(cfg)
    pending, steps = list(enumerate(prompts)), 0
    while pending or eng.has_unfinished():
        if pending and steps % 6 == 0:
            i, p = pending.pop(0)
            eng.add_request(Request(f"r{i}", p, SP, tenant_id=f"t{i % 2}", priority=i % 3))
        eng.step()
        steps += 1
    outs = [eng.output_token_ids(f"r{i}") for i in range(len(prompts))]
    stats = eng.stats()
    cached = sum(m.num_cached_tokens for m in eng.request_metrics())
    eng.close()
    assert outs == refs
    assert cached >= 24  # the shared prefixes were found again
    assert stats["num_demoted_blocks"] > 0 and stats["num_loaded_blocks"] > 0
    assert stats["spec_num_draft_tokens"] > 0
