"""NativeKVManager on tiny pools: exact block ids through share, cache, demote, load, CoW."""

import torch

from sagellm.core.types import Request, RequestMetrics, SamplingParams
from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.engines.native.sequence import Sequence
from sagellm.kv_runtime import KVBackendProtocol, TenantQuota


def seq(rid, tokens, tenant="default"):
    req = Request(rid, list(tokens), SamplingParams(max_tokens=4), tenant_id=tenant)
    return Sequence(req, list(tokens), len(tokens), RequestMetrics(rid, 0.0, len(tokens)), None)


def manager(num_blocks, **kw):
    kv = torch.arange(num_blocks, dtype=torch.float32).view(1, 1, num_blocks, 1, 1, 1)
    kv = kv.expand(1, 2, num_blocks, 1, 2, 1).contiguous()  # block b holds the value b
    return NativeKVManager(kv, 2, enable_prefix_caching=True, **kw)


def run(m, s):
    """Allocate the whole prompt, pretend the forward ran, and offer the blocks."""
    need = -(-len(s.token_ids) // 2) - len(s.block_ids)
    assert m.allocate(s, need) is AllocStatus.OK
    s.num_computed_tokens = len(s.token_ids)
    m.commit(s)


def test_pool_is_a_backend():
    assert isinstance(manager(4).pool, KVBackendProtocol)


def test_share_cache_and_copy_on_write():
    m = manager(6)
    a = seq("a", [1, 2, 3, 4, 5])
    run(m, a)
    assert a.block_ids == [0, 1, 2]
    m.free(a)
    assert a.block_ids == [] and m.pool.num_cached_blocks == 2 and m.num_referenced_blocks == 0
    b = seq("b", [1, 2, 3, 4, 9])
    assert m.match_prefix(b) == 4
    assert b.block_ids == [0, 1] and m.pool.ref_count(0) == 1
    b.num_computed_tokens = 2  # pretend the next write lands inside indexed block 1
    assert m.ensure_writable(b)
    assert b.block_ids == [0, 3] and m.num_cow_copies == 1
    assert float(m.pool.tensor[0, 0, 3, 0, 0, 0]) == 1.0  # the copy holds block 1's KV
    assert m.pool.is_cached(1)  # the indexed original is untouched


def test_demote_to_host_then_load_back():
    m = manager(4, host_blocks=2)
    a = seq("a", [1, 2, 3, 4, 0])
    run(m, a)
    m.free(a)  # blocks 0, 1 cached; free list [3, 2]
    b = seq("b", [5, 6, 7, 8, 0])
    run(m, b)  # needs 3 blocks: a's deepest block (1) is demoted to host slot 0
    assert b.block_ids == [3, 2, 1]
    assert m.num_demoted_blocks == 1 and m.hierarchy.tier("host").num_used_blocks == 1
    m.free(b)
    again = seq("a2", [1, 2, 3, 4, 7])
    assert m.match_prefix(again) == 4
    assert again.block_ids == [0, 1]  # block 1 was free again and received the load
    assert m.num_loaded_blocks == 1 and m.hierarchy.tier("host").num_used_blocks == 0
    assert float(m.pool.tensor[0, 0, 1, 0, 0, 0]) == 1.0  # a's KV came back intact


def test_no_tiers_evicts_leaf_first():
    m = manager(4)
    a = seq("a", [1, 2, 3, 4, 0])
    run(m, a)
    m.free(a)
    run(m, seq("b", [5, 6, 7, 8, 0]))
    assert m.num_dropped_entries == 1
    assert m.index.lookup([1, 2, 3, 4, 0], "default").hit.matched_length == 2  # root kept


def test_quota_refuses_only_that_tenant():
    m = manager(8, quotas={"t": TenantQuota(hard_blocks=2)})
    t = seq("t", [1, 2, 3, 4, 5], tenant="t")
    assert m.allocate(t, 3) is AllocStatus.OVER_QUOTA
    assert m.allocate(seq("u", [1], tenant="u"), 6) is AllocStatus.OK
    assert m.allocate(t, 2) is AllocStatus.OK
    assert m.quota.usage_blocks("t") == 2
    m.free(t)
    assert m.quota.usage_blocks("t") == 0
