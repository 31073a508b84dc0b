"""PD across processes: a prefill process and a decode process (real native engines, KV moved
by the connector over shm), behind PDCluster. Greedy outputs equal the colocated engine and
HF with prefix caching on and staggered batched requests; a killed decode process gives a
clear error at once, and leaves no worker and no shm segment behind."""

import os
import signal
import time
from pathlib import Path

import pytest
from test_oracle_tiny import hf_reference, prompts_of

from sagellm.core.config import EngineConfig, ModelConfig
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native import NativeEngine
from sagellm.engines.pd import PDCluster, PDClusterConfig, PDWorkerError


def _engine_cfg(folder) -> EngineConfig:
    return EngineConfig(
        model=ModelConfig(path=str(folder), dtype="float32"), block_size_tokens=4,
        num_kv_blocks=48, enable_prefix_caching=True, max_num_batched_tokens=16,
    )  # fmt: skip


def _shm_segments() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("sagellm_kv_*")}


def _run(cluster, prompts, max_tokens):
    """Submit each request once the previous one has its first token (staggered: later
    prompts arrive while earlier ones decode); step to the end."""
    finished = {}

    def step():
        for o in cluster.step():
            if o.finished:
                finished[o.request_id] = o.finish_reason

    for i, (p, n) in enumerate(zip(prompts, max_tokens, strict=True)):
        cluster.add_request(Request(f"r{i}", p, SamplingParams(max_tokens=n, ignore_eos=True)))
        while not cluster.output_token_ids(f"r{i}"):
            step()
    while cluster.has_unfinished():
        step()
    return finished


@pytest.mark.parametrize("transport", ["shm", pytest.param("tcp", marks=pytest.mark.heavy)])
def test_pd_cluster_equals_colocated_and_hf_then_survives_decode_death(tiny_checkpoint, transport):
    model, folder = tiny_checkpoint("llama")
    base = prompts_of([1, 4, 11, 7, 18], seed=7)
    # r5 shares r4's first 16 tokens (4 whole blocks): a prefix hit on the prefill side
    prompts = [*base, [*base[4][:16], 3, 9, 27]]
    max_tokens = [6, 7, 6, 1, 9, 5]  # r3 finishes on the prefill side
    cfg = _engine_cfg(folder)
    colocated = NativeEngine(cfg)
    want = colocated.generate(prompts, [SamplingParams(max_tokens=n, ignore_eos=True)
                                        for n in max_tokens])  # fmt: skip
    segments_before = _shm_segments()
    cluster = PDCluster(PDClusterConfig(cfg, transport=transport, timeout_s=30.0))
    finished = _run(cluster, prompts, max_tokens)
    got = [cluster.output_token_ids(f"r{i}") for i in range(len(prompts))]
    metrics = {m.request_id: m for m in cluster.request_metrics()}
    decode_steps = cluster.role_step_metrics("decode")
    prefill_steps = cluster.role_step_metrics("prefill")
    _check_outputs(model, prompts, max_tokens, want, finished, got, metrics)
    # the split held: prefill computed only (uncached) prompt tokens, decode only decode tokens
    cached = sum(m.num_cached_tokens for m in metrics.values())
    assert sum(s.num_batched_tokens for s in prefill_steps) == sum(map(len, prompts)) - cached
    assert all(s.num_prefill_tokens == 0 for s in decode_steps)
    assert sum(s.num_batched_tokens for s in decode_steps) == sum(n - 1 for n in max_tokens)
    _kill_decode_mid_run(cluster, segments_before)


def _check_outputs(model, prompts, max_tokens, want, finished, got, metrics):
    assert finished == {f"r{i}": "length" for i in range(len(prompts))}
    assert got == want
    for i, (p, n) in enumerate(zip(prompts, max_tokens, strict=True)):
        assert got[i] == hf_reference(model, p, n)[0], i
    assert metrics["r5"].num_cached_tokens == 16  # prefix caching on the prefill side
    for i, n in enumerate(max_tokens):
        m = metrics[f"r{i}"]
        assert m.num_output_tokens == n == len(m.token_times_s)
        assert m.arrival_s <= m.scheduled_s <= m.first_token_s <= m.finished_s  # one clock
        assert m.token_times_s == sorted(m.token_times_s)


def _kill_decode_mid_run(cluster, segments_before):
    """SIGKILL the decode process while requests decode: the front raises at once naming it;
    both workers are reaped and no shm segment is left."""
    pids = cluster.pids()
    cluster.add_request(Request("a0", [5, 6, 7], SamplingParams(max_tokens=30, ignore_eos=True)))
    while not cluster.output_token_ids("a0"):
        cluster.step()
    assert cluster.abort("a0") and not cluster.abort("a0")
    assert [(o.request_id, o.finish_reason) for o in cluster.step()] == [("a0", "abort")]
    assert not cluster.has_unfinished()
    for i, p in enumerate(prompts_of([9, 5, 13], seed=3)):
        cluster.add_request(Request(f"k{i}", p, SamplingParams(max_tokens=40, ignore_eos=True)))
    seen = 0
    while seen < 4:  # decoding is under way on the decode process
        seen += sum(len(o.new_token_ids) for o in cluster.step())
    os.kill(pids["decode"], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(PDWorkerError, match=r"decode worker \(pid \d+\) exited with code -9"):
        while True:
            cluster.step()
    assert time.monotonic() - t0 < 10.0  # seen through the process sentinel, not a timeout
    with pytest.raises(PDWorkerError, match="closed"):
        cluster.step()
    for pid in pids.values():  # both workers are gone (reaped by close)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert _shm_segments() <= segments_before
