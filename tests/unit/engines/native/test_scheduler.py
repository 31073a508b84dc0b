"""Scheduler decisions on tiny pools, with exact expectations (no model involved)."""

import torch

from sagellm.core.types import Request, RequestMetrics, SamplingParams
from sagellm.engines.native.kv_manager import NativeKVManager
from sagellm.engines.native.scheduler import Scheduler
from sagellm.engines.native.sequence import Sequence


def seq(rid: str, n_prompt: int, max_tokens: int = 8) -> Sequence:
    req = Request(rid, list(range(n_prompt)), SamplingParams(max_tokens=max_tokens))
    return Sequence(
        req,
        list(req.prompt_token_ids),
        n_prompt,
        RequestMetrics(rid, 0.0, n_prompt),
        None,
        max_len_tokens=1000,
    )


def finish_step(batch):
    """Pretend the forward ran: advance computed tokens and append one token when sampled."""
    for s, n in batch.items:
        s.num_computed_tokens += n
        if s.num_computed_tokens == len(s.token_ids):
            s.token_ids.append(7)


def make(num_blocks=8, bs=4, max_seqs=8, budget=16, chunked=True):
    kv = NativeKVManager(torch.zeros(1, 2, num_blocks, 1, bs, 1), bs)
    return Scheduler(kv, bs, max_seqs, budget, chunked)


def test_chunked_prefill_splits_under_budget():
    sch = make(budget=6)
    a = seq("a", 10)
    sch.add(a)
    b1 = sch.schedule()
    assert [(s.request_id, n) for s, n in b1.items] == [("a", 6)]
    finish_step(b1)
    b2 = sch.schedule()
    assert [(s.request_id, n) for s, n in b2.items] == [("a", 4)]
    finish_step(b2)
    assert [(s.request_id, n) for s, n in sch.schedule().items] == [("a", 1)]


def test_decodes_first_then_new_prefills_share_budget():
    sch = make(budget=8)
    a, b = seq("a", 3), seq("b", 20)
    sch.add(a)
    finish_step(sch.schedule())  # a prefilled
    sch.add(b)
    batch = sch.schedule()
    assert [(s.request_id, n) for s, n in batch.items] == [("a", 1), ("b", 7)]


def test_no_chunking_waits_for_whole_prompt_budget():
    sch = make(budget=8, chunked=False)
    a, b = seq("a", 3), seq("b", 6)
    sch.add(a)
    sch.add(b)
    batch = sch.schedule()
    assert [(s.request_id, n) for s, n in batch.items] == [("a", 3)]


def test_back_pressure_keeps_request_waiting():
    sch = make(num_blocks=3, bs=4, budget=32)
    a, b = seq("a", 10), seq("b", 8)  # a takes 3 blocks; b needs 2
    sch.add(a)
    sch.add(b)
    batch = sch.schedule()
    assert [s.request_id for s, _ in batch.items] == ["a"]
    assert list(sch.waiting) == [b] and b.block_ids == []
    sch.release(a)
    assert [s.request_id for s, _ in sch.schedule().items] == ["b"]


def test_preempts_latest_running_and_recomputes():
    sch = make(num_blocks=4, bs=4, budget=32)
    a, b = seq("a", 8), seq("b", 8)  # 2 blocks each: pool full after prefill
    sch.add(a)
    sch.add(b)
    finish_step(sch.schedule())
    assert sch.allocator.num_free == 0
    batch = sch.schedule()  # a's 9th token needs a 3rd block -> b is preempted
    assert [(s.request_id, n) for s, n in batch.items] == [("a", 1)]
    assert batch.preempted == [b]
    assert b.num_computed_tokens == 0 and b.block_ids == [] and b.metrics.preemptions == 1
    assert sch.waiting[0] is b and len(b.token_ids) == 9  # its sampled token is kept
