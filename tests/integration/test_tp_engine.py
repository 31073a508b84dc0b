"""Tensor parallelism in the native engine: ranks are real processes; greedy output equals
tp=1 and HF fp32; comm seconds reach StepMetrics; a dead rank gives a bounded error.

The tiny checkpoint has 6 query heads and 3 KV heads: tp=3 splits evenly (1 KV head each),
tp=2 unevenly (2 + 1 KV heads, 4 + 2 query heads). Each rank runs one torch thread.
"""

import dataclasses
import gc
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from test_oracle_tiny import check, prompts_of

from sagellm.core import ConfigError, Request, SamplingParams, parse_config
from sagellm.core.config import EngineConfig
from sagellm.engines.native import MultiModelEngine, NativeEngine
from sagellm.engines.native.tp_group import TPUnsupportedError, TPWorkerLostError
from sagellm.scheduler_ir import ExecutionPlan, IRBuilder, IROptimizer, StepDecision

TP_TINY = dict(
    vocab_size=256,
    hidden_size=96,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=6,
    num_key_value_heads=3,
    max_position_embeddings=1024,
    initializer_range=0.2,
    eos_token_id=None,
    bos_token_id=None,
)


@pytest.fixture(scope="module")
def tp_tiny(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TP_TINY)).eval()
    folder = tmp_path_factory.mktemp("tp-tiny")
    model.save_pretrained(folder)
    return model, folder


def shared_prefix_prompts():
    """Six prompts, four of them sharing a 12-token (3-block) prefix: prefix-cache hits."""
    base = prompts_of([12], seed=7)[0]
    tails = prompts_of([3, 9, 1, 14, 6, 2], seed=8)
    return [base + t if i % 3 != 2 else t for i, t in enumerate(tails)]


def foreign_plan_reason(e, tp_size):
    """check_plan's reason for a plan built as if the engine had ``tp_size`` ranks."""
    e.add_request(Request("x", [1, 2, 3], SamplingParams(max_tokens=1)))
    st = dataclasses.replace(e.snapshot(), tp_size=tp_size)
    g = IROptimizer(64).optimize(IRBuilder().build(StepDecision((("x", 3),)), st))
    reason = e.check_plan(ExecutionPlan.of("p", g, e.instance_id))
    e.abort("x")
    e.step()
    return reason


def engine(folder, tp, **kw):
    kw = {"block_size_tokens": 4, "num_kv_blocks": 64, "num_threads": 1, **kw}
    return NativeEngine.from_pretrained(folder, tp_size=tp, **kw)


@pytest.mark.parametrize("tp", [1, 2, 3])
def test_tp_greedy_equals_hf_with_prefix_cache_lpm_and_defrag(tp_tiny, tp):
    model, folder = tp_tiny
    # lpm strategy, prefix caching, staggered arrivals, and defragmentation after any step
    # that leaves holes: its block moves must reach every rank's cache
    e = engine(
        folder,
        tp,
        enable_prefix_caching=True,
        scheduling_strategy="lpm",
        defrag_fragmentation_threshold=0.05,
    )
    check(e, model, shared_prefix_prompts(), n_new=10, stagger=2)
    assert sum(m.num_cached_tokens for m in e.request_metrics()) >= 12
    comm = [s.comm_s for s in e.step_metrics()]
    if tp == 1:
        assert e.tp is None and comm == [0.0] * len(comm)
        assert "all_reduce nodes with tp_size 1" in foreign_plan_reason(e, 2)
        return
    assert "lacks partial sums" in foreign_plan_reason(e, 1)
    assert all(c > 0 for c in comm)
    assert e.tp.num_block_copies > 0  # defrag moves were mirrored
    # the fused plan: one collective per layer and part per forward
    assert e.tp.stats.num_calls == 2 * TP_TINY["num_hidden_layers"] * len(comm)
    procs = list(e.tp.procs)
    assert all(p.is_alive() for p in procs)
    if tp == 2:  # rank 0 failing inside a forward breaks the group, not just one request
        shard_forward = e.model.row_parallel

        def fail(x, w):
            raise RuntimeError("injected")

        e.model.row_parallel = fail
        e.add_request(Request("y", [1, 2], SamplingParams(max_tokens=1)))
        with pytest.raises(TPWorkerLostError, match="rank 0: RuntimeError: injected"):
            e.step()
        e.model.row_parallel = shard_forward
    del e  # no close(): garbage collection stops the workers (weakref.finalize)
    gc.collect()
    deadline = time.monotonic() + 10
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(p.is_alive() for p in procs)


def test_tp_unfused_overlapped_then_a_killed_rank_gives_a_bounded_error(tp_tiny):
    model, folder = tp_tiny
    e = engine(folder, 2, tp_fuse_all_reduce=False, tp_overlap_all_reduce=True, tp_timeout_s=20)
    try:
        check(e, model, prompts_of([5, 11, 3]), n_new=6)
        steps = e.step_metrics()
        # unbucketed plan: one collective per request, layer and part
        per_step = [s.num_seqs * 2 * TP_TINY["num_hidden_layers"] for s in steps]
        assert e.tp.stats.num_calls == sum(per_step) > 2 * 2 * len(steps)
        with pytest.raises(TPUnsupportedError, match="prompt_logits"):
            e.teacher_forced_logits([1, 2, 3])
        # the worker dies mid-step: stopped before the step, so rank 0 is inside a collective
        # waiting for it when the kill lands
        worker = e.tp.procs[0]
        os.kill(worker.pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (worker.pid, signal.SIGKILL)).start()
        e.add_request(Request("after", prompts_of([4])[0], SamplingParams(max_tokens=4)))
        t0 = time.monotonic()
        with pytest.raises(TPWorkerLostError, match="rank 1 .*died"):
            while e.has_unfinished():
                e.step()
        assert time.monotonic() - t0 < 20  # the liveness check, not the 20 s timeout
        with pytest.raises(TPWorkerLostError):  # the group stays broken
            e.step()
    finally:
        e.close()
    assert not any(p.is_alive() for p in e.tp.procs)
    assert not list(Path("/dev/shm").glob(f"sagellm_{e.tp.backend.config.group_name}*"))


def test_bad_tp_configs_are_config_errors(tp_tiny):
    _, folder = tp_tiny
    with pytest.raises(ConfigError, match=r"tp_size 4 exceeds the model's 3 KV heads"):
        engine(folder, 4)
    with pytest.raises(ConfigError, match="tp_size"):
        parse_config({"engine": {"tp_size": 0}})
    with pytest.raises(ConfigError, match="host_tier_blocks"):
        parse_config(
            {"engine": {"tp_size": 2, "enable_prefix_caching": True, "host_tier_blocks": 8}}
        )
    with pytest.raises(ConfigError, match="speculative_tokens"):
        parse_config({"engine": {"tp_size": 2, "accel": {"speculative_tokens": 2}}})
    with pytest.raises(ConfigError, match="nccl"):
        parse_config({"engine": {"tp_size": 2, "tp_comm_backend": "nccl"}})
    with pytest.raises(ConfigError, match="tp_size must be 1 in a MultiModelEngine"):
        MultiModelEngine({"a": EngineConfig(tp_size=2)})
