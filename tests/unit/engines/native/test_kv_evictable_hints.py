"""Victim searches with ``evictable_hints`` (unevictable entries set aside until the manager
reports them evictable) choose exactly the victims of a search that passes over them every
time: a random workload of shared prefixes, held and finished sequences, pins and
copy-on-write runs on two managers, one with hints and one without, and their indexes, block
tables and pools must agree after every operation."""

import random

import pytest
import torch

from sagellm.core.types import Request, RequestMetrics, SamplingParams
from sagellm.engines.native.kv_manager import AllocStatus, NativeKVManager
from sagellm.engines.native.sequence import Sequence

BS = 2


def seq(rid, tokens):
    req = Request(rid, list(tokens), SamplingParams(max_tokens=4))
    return Sequence(req, list(tokens), len(tokens), RequestMetrics(rid, 0.0, len(tokens)), None)


def state(m: NativeKVManager, held: dict[str, Sequence]):
    entries = [(e.entry_id, e.kv_block_ids, e.token_length) for e in m.index.entries()]
    tables = {r: list(s.block_ids) for r, s in held.items()}
    return entries, tables, m.pool.num_free_blocks, m.tracker.num_victims


def step(m: NativeKVManager, held: dict, pins: list, op: tuple) -> None:
    kind, arg = op
    if kind == "run":
        rid, tokens, keep, cow = arg
        s = seq(rid, tokens)
        hit = m.match_prefix(s)
        if cow and hit:
            s.num_computed_tokens = hit - 1  # the next write lands in an indexed block
            if not m.ensure_writable(s):
                m.free(s)
                return
        need = -(-len(tokens) // BS) - len(s.block_ids)
        if m.allocate(s, need) is not AllocStatus.OK:
            m.free(s)
            return
        s.num_computed_tokens = len(tokens)
        m.commit(s)
        if keep:
            held[rid] = s
        else:
            m.free(s)
    elif kind == "finish" and held:
        m.free(held.pop(sorted(held)[arg % len(held)]))
    elif kind == "pin":
        pins.append(m.pin([seq("p", arg)]))
    elif kind == "unpin" and pins:
        m.unpin(pins.pop(0))


def workload(seed: int, n: int = 300) -> list[tuple]:
    rng = random.Random(seed)
    stems = [[rng.randrange(5) for _ in range(8)] for _ in range(4)]
    ops = []
    for i in range(n):
        r = rng.random()
        tokens = rng.choice(stems)[: rng.randrange(2, 9)] + [rng.randrange(5) for _ in range(3)]
        if r < 0.6:
            ops.append(("run", (f"s{i}", tokens, rng.random() < 0.4, rng.random() < 0.5)))
        elif r < 0.8:
            ops.append(("finish", rng.randrange(100)))
        elif r < 0.9:
            ops.append(("pin", tokens))
        else:
            ops.append(("unpin", None))
    return ops


@pytest.mark.parametrize("policy", ["lru", "lfu", "arc", "s3fifo", "sieve"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hints_change_no_victim(policy, seed):
    managers = []
    for hints in (True, False):
        kv = torch.zeros(1, 2, 24, 1, 1, 1)
        m = NativeKVManager(kv, BS, enable_prefix_caching=True, eviction_policy=policy)
        m.evictable_hints = hints
        managers.append((m, {}, []))
    evictions = 0
    for op in workload(seed):
        for m, held, pins in managers:
            step(m, held, pins, op)
        (a, ha, _), (b, hb, _) = managers
        assert state(a, ha) == state(b, hb), op
        evictions = a.tracker.num_victims
    assert evictions > 20  # the pool was under pressure: victims were chosen
