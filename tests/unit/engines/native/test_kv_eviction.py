"""The native KV manager's device eviction through each kv_policy: exact victims on a 6-block
pool (block size 2, no tiers, so victims are leaves that leave the index)."""

import pytest
import torch

from sagellm.core.types import Request, RequestMetrics, SamplingParams
from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.engines.native.sequence import Sequence
from sagellm.kv_policy import EVICTION_POLICIES
from sagellm.kv_policy.cost_benefit import PrefillFlopModel

A0, A1, B0, C0 = 0, 1, 2, 3  # entry ids in insertion order (A is two blocks deep)


def manager(policy: str) -> NativeKVManager:
    kw = {}
    if policy == "cost_aware":
        flops = PrefillFlopModel(num_params=1000, num_layers=2, attn_dim=8)
        kw = {"flop_model": flops, "flops_per_s": 1e9, "block_size_bytes": 64, "block_tokens": 2}
    kv = torch.zeros(1, 2, 6, 1, 2, 1)
    return NativeKVManager(
        kv, 2, enable_prefix_caching=True, eviction_policy=policy, policy_kwargs=kw
    )


def serve(m: NativeKVManager, rid: str, tokens: list[int]) -> None:
    """Admit (prefix hit), allocate the rest, pretend the forward ran, commit, finish."""
    req = Request(rid, tokens, SamplingParams(max_tokens=1))
    s = Sequence(req, list(tokens), len(tokens), RequestMetrics(rid, 0.0, len(tokens)), None)
    m.match_prefix(s)
    assert m.allocate(s, -(-len(tokens) // 2) - len(s.block_ids)) is AllocStatus.OK
    s.num_computed_tokens = len(tokens)
    m.commit(s)
    m.free(s)


def victims(policy: str, num_hits_a: int) -> list[int]:
    m = manager(policy)
    serve(m, "a", [1, 2, 3, 4, 0])
    for i in range(num_hits_a):
        serve(m, f"a{i}", [1, 2, 3, 4, 10 + i])  # hits A0 and A1
    serve(m, "b", [5, 6, 0])
    serve(m, "c", [7, 8, 0])
    before = {e.entry_id for e in m.index.entries()}
    serve(m, "d", [9, 9, 9, 9, 9, 0])  # 3 blocks, 2 free: one cached block must go
    assert len(m.tracker) == len(m.tracker.policy) == m.pool.num_cached_blocks
    return sorted(before - {e.entry_id for e in m.index.entries()})


@pytest.mark.parametrize("policy", EVICTION_POLICIES.names())
def test_cold_cache_evicts_the_oldest_leaf(policy):
    # A0 is older than A1 but is not a leaf; without hits A1 ranks first everywhere
    # (oldest; for cost_aware also the group with no reuse yet)
    assert victims(policy, 0) == [A1]


HOT_A = {
    "lru": [A1],  # A was hit before B and C were inserted: least recent
    "lfu": [B0],  # one access, and older than C0
    "arc": [B0],  # A moved to T2 on its hits; p = 0, so T1's LRU end (B0) goes
    "s3fifo": [B0],  # A's hits promote it out of the small queue; B0 is its unhit head
    "sieve": [B0],  # A0/A1 visited: the hand clears them and stops at B0
    "cost_aware": [C0],  # B0 and C0 cost the same; C0 was inserted after B0 had lowered
    # its depth group's reuse estimate (no reuse seen), so its predicted value is lower
}


@pytest.mark.parametrize("policy", EVICTION_POLICIES.names())
def test_hot_prefix_victim_per_policy(policy):
    assert victims(policy, 2) == HOT_A[policy]


def test_freed_parent_becomes_a_candidate_after_its_leaf():
    m = manager("lru")
    serve(m, "a", [1, 2, 3, 4, 0])
    serve(m, "d", [9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0])  # 6 blocks: both A blocks go, leaf first
    assert m.index.lookup([1, 2, 3, 4, 0]).hit.matched_length == 0
    assert m.tracker.num_victims == 2 and len(m.tracker) == 5  # d's five full blocks


def test_unknown_policy_lists_known_ones():
    with pytest.raises(ValueError, match="known: arc, cost_aware, lfu, lru, s3fifo, sieve"):
        manager("fifo")
