"""A k-block eviction asks the kv_policy once (``PolicyContext.on_victim`` frees each victim
and reports its parent before the next is chosen) and frees the same blocks, in the same
order, as k one-block evictions."""

import pytest
import torch

from sagellm.core.types import Request, RequestMetrics, SamplingParams
from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.engines.native.sequence import Sequence
from sagellm.kv_policy import EVICTION_POLICIES
from sagellm.kv_policy.cost_benefit import PrefillFlopModel


def seq(rid: str, tokens: list[int]) -> Sequence:
    req = Request(rid, tokens, SamplingParams(max_tokens=1))
    return Sequence(req, list(tokens), len(tokens), RequestMetrics(rid, 0.0, len(tokens)), None)


def manager(policy: str, hints: bool) -> NativeKVManager:
    kw = {}
    if policy == "cost_aware":
        flops = PrefillFlopModel(num_params=1000, num_layers=2, attn_dim=8)
        kw = {"flop_model": flops, "flops_per_s": 1e9, "block_size_bytes": 64, "block_tokens": 2}
    kv = torch.zeros(1, 2, 16, 1, 2, 1)
    m = NativeKVManager(kv, 2, enable_prefix_caching=True, eviction_policy=policy, policy_kwargs=kw)
    m.evictable_hints = hints
    return m


def serve(m: NativeKVManager, rid: str, tokens: list[int], keep: bool = False) -> Sequence:
    s = seq(rid, tokens)
    m.match_prefix(s)
    assert m.allocate(s, -(-len(tokens) // 2) - len(s.block_ids)) is AllocStatus.OK
    s.num_computed_tokens = len(tokens)
    m.commit(s)
    if not keep:
        m.free(s)
    return s


def history(m: NativeKVManager) -> None:
    """12 indexed blocks: chains of 4, 3, 3 and 2, hits on two of them, one held."""
    serve(m, "a", [1, 2, 3, 4, 5, 6, 7, 8, 0])
    serve(m, "b", [9, 9, 8, 8, 7, 7, 0])
    serve(m, "c", [5, 5, 6, 6, 4, 4, 0], keep=True)  # referenced: never a victim
    serve(m, "a2", [1, 2, 3, 4, 5, 6, 7, 8, 1])  # hits a's four blocks
    serve(m, "d", [3, 3, 2, 2, 0])
    serve(m, "b2", [9, 9, 8, 8, 1])  # hits b's first two
    assert m.pool.num_cached_blocks == 9  # c's three blocks are referenced


def evicted(policy: str, hints: bool, batch: bool) -> tuple[list[int], int]:
    """Entry ids freed by 7 evictions (every free block taken too), in order, and the
    policy calls they took."""
    m = manager(policy, hints)
    history(m)
    calls = []
    select = m.tracker.policy.select_victims
    m.tracker.policy.select_victims = lambda ctx, n: calls.append(n) or select(ctx, n)
    taker = seq("taker", [0])
    n = m.pool.num_free_blocks + 7
    if batch:
        assert m.allocate(taker, n) is AllocStatus.OK
    else:
        for _ in range(n):
            assert m.allocate(taker, 1) is AllocStatus.OK
    assert len(m.tracker) == len(m.tracker.policy) == len(m.index) == 12 - 7
    m.index.check_invariants()
    return [r.entry_id for r in m.migration_log], len(calls)


@pytest.mark.parametrize("hints", [True, False])
@pytest.mark.parametrize("policy", EVICTION_POLICIES.names())
def test_k_block_eviction_is_one_call_with_the_victims_of_k_calls(policy, hints):
    one_by_one, n_single = evicted(policy, hints, batch=False)
    batched, n_batch = evicted(policy, hints, batch=True)
    assert len(one_by_one) == 7 and n_single == 7
    assert batched == one_by_one
    assert n_batch == 1


class NoHook:
    """A policy that ignores ``ctx.on_victim`` (LRU underneath)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __len__(self):
        return len(self.inner)

    def select_victims(self, ctx, n):
        return self.inner.select_victims(
            type(ctx)(ctx.pool_stats, is_evictable=ctx.is_evictable), n
        )


def test_a_policy_without_the_hook_is_asked_again_for_the_rest():
    m = manager("lru", hints=False)
    history(m)
    m.tracker.policy = NoHook(m.tracker.policy)
    calls = []
    select = m.tracker.policy.select_victims
    m.tracker.policy.select_victims = lambda ctx, n: calls.append(n) or select(ctx, n)
    assert m.allocate(seq("taker", [0]), m.pool.num_free_blocks + 7) is AllocStatus.OK
    # its first call sees only today's leaves (a, b and d's last blocks, not c's: held)
    assert calls[0] == 7 and len(calls) > 1
    assert len(m.migration_log) == 7 and len(m.tracker) == len(m.index) == 5
    m.index.check_invariants()
