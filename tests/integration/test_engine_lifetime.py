"""An engine is freed as soon as its last reference goes (no reference cycle keeps its KV
cache, gigabytes by default, alive until a full garbage collection), with every module on."""

import gc
import weakref


def test_engine_freed_by_refcount_with_tiers_migration_and_overlap(tiny_checkpoint, tmp_path):
    from sagellm.core.types import Request, SamplingParams
    from sagellm.engines.native import NativeEngine

    _, folder = tiny_checkpoint("llama")
    gc.disable()
    try:
        eng = NativeEngine.from_pretrained(
            folder,
            block_size_tokens=4,
            num_kv_blocks=16,
            enable_prefix_caching=True,
            host_tier_blocks=4,
            disk_tier_blocks=8,
            kv_cache_dir=str(tmp_path),
            migration_policy="cost_benefit",
            overlap_kv_loads=True,
            scheduling_strategy="lpm",
            tenant_quotas={"t": {"hard_blocks": 12}},
        )
        eng.generate([list(range(1, 20))], SamplingParams(max_tokens=3, ignore_eos=True))
        eng.add_request(Request("r", list(range(1, 24)), SamplingParams(max_tokens=2)))
        while eng.has_unfinished():
            eng.step()
        cache = weakref.ref(eng.cache.kv)  # the tensor: pools and tiers hold it too
        eng.close()
        del eng
        assert cache() is None
    finally:
        gc.enable()
