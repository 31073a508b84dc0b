"""Tensor-parallel shards (uneven splits, errors naming the numbers) and how a plan's
all_reduce nodes become the forward's collectives (tp_plan), without processes."""

import dataclasses

import pytest
import torch

from sagellm.core.errors import ConfigError, PlanRejectedError
from sagellm.engines.native.arch import ModelArch
from sagellm.engines.native.tp_plan import check_reductions, reduction_schedule
from sagellm.engines.native.tp_shard import plan_shards, split_evenly
from sagellm.scheduler_ir import IRBuilder, IROptimizer
from sagellm.scheduler_ir.types import RequestView, SchedulerState, StepDecision

# SmolLM2-135M's shapes: 9 query heads, 3 KV heads, intermediate 1536
SMOL = ModelArch("llama", 49152, 576, 1536, 30, 9, 3, 64, 1e-5, 8192, True, False, False,
                 False, False, torch.ones(32), 1.0, (2,), 1)  # fmt: skip


def test_split_evenly_gives_the_first_ranks_the_extra():
    assert split_evenly(3, 2) == [(0, 2), (2, 3)]
    assert split_evenly(7, 3) == [(0, 3), (3, 5), (5, 7)]


def test_smollm2_at_tp2_splits_kv_heads_2_plus_1():
    a, b = plan_shards(SMOL, 2)
    assert (a.kv_heads, a.heads, a.ffn) == ((0, 2), (0, 6), (0, 768))
    assert (b.kv_heads, b.heads, b.ffn) == ((2, 3), (6, 9), (768, 1536))
    assert [s.num_heads for s in plan_shards(SMOL, 3)] == [3, 3, 3]


def test_tp_sizes_that_cannot_split_name_the_numbers():
    with pytest.raises(ConfigError, match="tp_size 4 exceeds the model's 3 KV heads"):
        plan_shards(SMOL, 4)
    with pytest.raises(ConfigError, match="intermediate_size 2"):
        plan_shards(dataclasses.replace(SMOL, intermediate_size=2), 3)
    with pytest.raises(ConfigError, match="tp_size must be an int >= 1"):
        plan_shards(SMOL, 0)


def _state(tp_size):
    views = tuple(
        RequestView(rid, 0.0, n, n + out, n if out else 0, out, 8, bool(out), 4)
        for rid, n, out in (("a", 6, 0), ("b", 3, 1), ("c", 2, 1))
    )
    return SchedulerState("i0", 0.0, views, 4, 100, 100, 8, 64, tp_size=tp_size,
                          hidden_bytes_per_token=100, num_layers=2)  # fmt: skip


def _plan(tp_size, **opt):
    decision = StepDecision((("a", 6), ("b", 1), ("c", 1)))
    return IROptimizer(64, **opt).optimize(IRBuilder().build(decision, _state(tp_size)))


def test_bucketed_plan_gives_one_collective_per_layer_part():
    g = _plan(2)
    assert check_reductions(g, 2) is None
    fwd = g.of_type("forward")[0]
    sched = reduction_schedule(g, fwd, {"a": (0, 6), "b": (6, 7), "c": (7, 8)}, 2)
    assert sched == [[[(0, 8)]]] * 4  # 2 layers x (attn, mlp), all rows in one collective
    # a request the step dropped leaves the collective; the rest stays one range
    assert reduction_schedule(g, fwd, {"a": (0, 6), "c": (6, 7)}, 2) == [[[(0, 7)]]] * 4


def test_unbucketed_plan_gives_one_collective_per_request():
    g = _plan(2, small_all_reduce_bytes=0)
    fwd = g.of_type("forward")[0]
    sched = reduction_schedule(g, fwd, {"a": (0, 6), "b": (6, 7), "c": (7, 8)}, 2)
    assert sched == [[[(0, 6)], [(6, 7)], [(7, 8)]]] * 4


def test_plans_that_misdescribe_the_reductions_are_rejected():
    assert "lacks partial sums" in check_reductions(_plan(1), 2)
    g = _plan(2, small_all_reduce_bytes=0)
    drop = g.of_type("all_reduce")[0]
    short = g.with_nodes(n for n in g.nodes if n is not drop)
    assert "no all_reduce node" in check_reductions(short, 2)
    with pytest.raises(PlanRejectedError, match="cover 2 of 8 rows"):
        reduction_schedule(short, g.of_type("forward")[0], {"a": (0, 6), "b": (6, 7),
                                                            "c": (7, 8)}, 2)  # fmt: skip
