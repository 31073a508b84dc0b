"""The patched LMDeploy paging layer (Scheduler, DefaultBlockManager, BlockTrie,
RecomputeEvictionHelper) on real SchedulerSequence objects on CPU, no model: block info equals
the allocator, eviction callbacks carry the evicted blocks, prefix fetch/store hooks feed
PrefixReuseMetrics, an external strategy's order is the admission order, and the comm hooks
count bytes per collective (gloo, one rank)."""

from __future__ import annotations

import numpy as np
import pytest
from lmdeploy_testing import NEEDS_LMDEPLOY

from sagellm.core.errors import ConfigError
from sagellm.engines.lmdeploy import (
    CommCallStats,
    LmdeployKVManager,
    PrefixReuseBridge,
    SequenceInfo,
    StrategyDecider,
)

BLOCK = 4


def make_scheduler(paging, num_gpu_blocks=8, prefix=False, max_batches=4):
    from lmdeploy.pytorch.config import CacheConfig, SchedulerConfig
    from lmdeploy.pytorch.messages import SequenceMeta
    from lmdeploy.pytorch.strategies.ar.sequence import ARSequenceStrategy

    return paging.Scheduler(
        SchedulerConfig(max_batches=max_batches, max_session_len=256),
        CacheConfig(
            max_batches=max_batches,
            block_size=BLOCK,
            num_cpu_blocks=0,
            num_gpu_blocks=num_gpu_blocks,
            enable_prefix_caching=prefix,
        ),
        seq_meta=SequenceMeta(BLOCK, strategy=ARSequenceStrategy()),
    )


def add(sched, session_id, tokens, arrive_s=0.0):
    seq = sched.add_session(session_id).add_sequence(np.asarray(tokens, dtype=np.int64))
    seq.arrive_time = arrive_s
    sched.add_sequence(seq)
    return seq


def decode_one(seqs):
    """What the engine does after a forward: append one sampled token to each."""
    from lmdeploy.pytorch.messages import UpdateTokenMode

    for s in seqs:
        s.update_token_ids(np.array([1], dtype=np.int64), mode=UpdateTokenMode.DECODE)


@NEEDS_LMDEPLOY
def test_block_info_matches_the_allocator(paging):
    sched = make_scheduler(paging)
    kv = LmdeployKVManager(sched)
    a, b = add(sched, 0, range(10)), add(sched, 1, range(20, 25))
    out = sched.schedule(is_prefill=True)
    assert [s.seq_id for s in out.running] == [a.seq_id, b.seq_id]
    info = kv.block_info()
    bm = sched.block_manager
    assert info.num_gpu_blocks == 8 and info.block_size_tokens == BLOCK
    assert info.num_free_gpu_blocks == bm.get_num_free_gpu_blocks() == 8 - 3 - 2
    assert info.block_tables == {
        s.seq_id: tuple(int(x) for x in bm.get_block_table(s)) for s in (a, b)
    }
    used = [x for t in info.block_tables.values() for x in t]
    assert len(set(used)) == len(used) == info.num_used_gpu_blocks


@NEEDS_LMDEPLOY
def test_sequence_eviction_callback_names_the_freed_blocks(paging):
    sched = make_scheduler(paging)
    kv = LmdeployKVManager(sched)
    a = add(sched, 0, range(10))  # 3 blocks
    sched.schedule(is_prefill=True)
    a_blocks = tuple(int(x) for x in sched.block_manager.get_block_table(a))
    sched.stop_session(0)  # a hangs, still holding its blocks
    b = add(sched, 1, range(100, 124))  # 6 blocks > 5 free: a is evicted for recompute
    out = sched.schedule(is_prefill=True)
    assert [s.seq_id for s in out.running] == [b.seq_id]
    assert [(e.kind, e.seq_id, e.blocks) for e in kv.evictions] == [("seq", a.seq_id, a_blocks)]
    assert a.num_blocks == 0


@NEEDS_LMDEPLOY
def test_prefix_eviction_callback_and_prefix_hooks(paging):
    sched = make_scheduler(paging, prefix=True)
    kv = LmdeployKVManager(sched)
    bridge = PrefixReuseBridge().attach(sched.block_trie)
    a = add(sched, 0, range(9))
    sched.schedule(is_prefill=True)
    decode_one([a])  # 10 tokens: 2 full blocks
    sched.schedule(is_prefill=False)  # decoding stores full blocks in the trie
    assert bridge.num_stored_blocks == 2
    b = add(sched, 1, [*range(8), 50, 51, 52])  # shares a's 2 blocks
    out = sched.schedule(is_prefill=True)
    assert b in out.running
    snap = bridge.metrics.snapshot()
    assert (snap.num_requests, snap.num_hit_requests, snap.num_hit_tokens) == (2, 1, 8)
    assert snap.num_query_tokens == 9 + 11 and snap.num_lookups == 2
    assert b.num_history_ids == 8  # lmdeploy skips the matched prefix
    sched.end_session(0)
    sched.end_session(1)  # the trie alone holds the 2 cached blocks now
    assert sched.block_manager.get_num_free_gpu_blocks() == 6
    add(sched, 2, range(200, 228))  # 7 blocks > 6 free: the trie evicts one leaf
    sched.schedule(is_prefill=True)
    assert kv.num_evicted_blocks("prefix") == 1 and kv.num_evicted_blocks("seq") == 0


@NEEDS_LMDEPLOY
def test_external_strategy_order_is_the_admission_order(paging):
    sched = make_scheduler(paging, num_gpu_blocks=32, max_batches=2)
    seqs = [add(sched, 10 + i, range(i * 10, i * 10 + 6), arrive_s=float(i)) for i in range(4)]
    decider = StrategyDecider("priority", BLOCK)
    for seq, prio in zip(seqs, [0, 1, 5, 3], strict=True):
        decider.request_info[seq.session.session_id] = SequenceInfo(priority=prio)
    sched.set_external_decider(decider)
    out = sched.schedule(is_prefill=True)  # two seats: the two highest priorities
    assert [s.seq_id for s in out.running] == [seqs[2].seq_id, seqs[3].seq_id]
    assert sched.admission_log == [seqs[2].seq_id, seqs[3].seq_id]
    # lmdeploy's own order (arrival) for comparison
    fcfs = make_scheduler(paging, num_gpu_blocks=32, max_batches=2)
    f = [add(fcfs, i, range(6), arrive_s=float(i)) for i in range(4)]
    assert [s.seq_id for s in fcfs.schedule(is_prefill=True).running] == [f[0].seq_id, f[1].seq_id]


class _PreemptFirst:
    """A decider that admits in arrival order and preempts every running sequence."""

    def admit(self, waiting, running):
        return sorted(waiting, key=lambda s: s.arrive_time), list(running)

    def victim(self, running):
        return 0


@NEEDS_LMDEPLOY
def test_external_preemption_frees_and_reports(paging):
    from lmdeploy.pytorch.messages import MessageStatus

    sched = make_scheduler(paging, num_gpu_blocks=16)
    kv = LmdeployKVManager(sched)
    a = add(sched, 0, range(6))
    sched.schedule(is_prefill=True)
    a_blocks = tuple(int(x) for x in sched.block_manager.get_block_table(a))
    sched.set_external_decider(_PreemptFirst())
    b = add(sched, 1, range(50, 56), arrive_s=1.0)
    out = sched.schedule(is_prefill=True)
    assert [e.blocks for e in kv.evictions] == [a_blocks]
    assert a.num_blocks == 0 and a.num_history_ids == 0
    assert [s.seq_id for s in out.running] == [b.seq_id]
    assert a.status == MessageStatus.WAITING  # back in the queue, recomputed when readmitted


@NEEDS_LMDEPLOY
def test_migration_plan_rides_on_the_scheduler_output(paging):
    sched = make_scheduler(paging)
    kv = LmdeployKVManager(sched)
    add(sched, 0, range(5))
    kv.migrate(copy={1: 5})
    out = sched.schedule(is_prefill=True)
    assert out.copy_map == {1: 5} and out.swap_in_map == {} and out.swap_out_map == {}
    assert sched.schedule(is_prefill=False).copy_map == {}  # applied once
    with pytest.raises(ValueError, match="outside"):
        kv.migrate(swap_in={0: 99})


@NEEDS_LMDEPLOY
def test_comm_hooks_count_bytes_per_collective(paging, tmp_path):
    import torch
    import torch.distributed as dist
    from lmdeploy.pytorch import distributed as ld

    stats = CommCallStats()
    detach = stats.attach(ld)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        world = dist.group.WORLD
        t = torch.ones(300, dtype=torch.float32)
        ld.all_reduce(t, group=world)
        ld.all_reduce(t, group=world)
        ld.broadcast(t, 0, group=world)
        out = [torch.empty(300)]
        ld.all_gather(out, t, group=world)
    finally:
        dist.destroy_process_group()
        detach()
    assert {op: (s.num_calls, s.num_bytes) for op, s in stats.by_op.items()} == {
        "all_reduce": (2, 2400),
        "broadcast": (1, 1200),
        "all_gather": (1, 1200),
    }
    assert all(s.total_s > 0 for s in stats.by_op.values())
    assert torch.equal(out[0], t)


def test_a_strategy_lmdeploy_cannot_honour_names_its_capabilities():
    with pytest.raises(ConfigError, match="cannot honour 'aegaeon'") as e:
        StrategyDecider("aegaeon", BLOCK)
    assert "admission_order" in str(e.value) and "fifo" in str(e.value)
    with pytest.raises(ConfigError, match="known: "):
        StrategyDecider("nope", BLOCK)
