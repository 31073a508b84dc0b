"""Cascade prefill attention (a shared prefix attended once for the group, merged by
log-sum-exp with each sequence's own keys) equals a dense fp64 reference and the one-pass
path, and is chosen only where every sequence shares the leading blocks before its queries."""

import pytest
import torch
from attention_reference import dense_reference

from sagellm.engines.native import attention_cascade
from sagellm.engines.native import attention_folded as folded
from sagellm.engines.native.attention import AttnMetadata, Workspace, build_group, paged_attention
from sagellm.engines.native.attention_cascade import shared_prefix_blocks

BS, KVH, H, D = 4, 2, 6, 16


@pytest.fixture
def low_threshold(monkeypatch):
    monkeypatch.setattr(attention_cascade, "MIN_SHARED_TOKENS", 2 * BS)


def case(dtype, shared_blocks, q_lens, own_cached, seed=0, d=D):
    """Sequences whose tables start with the same ``shared_blocks`` blocks, then
    ``own_cached[b]`` cached tokens of their own and ``q_lens[b]`` new queries."""
    g = torch.Generator().manual_seed(seed)
    n_blocks = 64
    kc = torch.randn(n_blocks, KVH, BS, d, generator=g).to(dtype)
    vc = torch.randn(n_blocks, KVH, BS, d, generator=g).to(dtype)
    perm = torch.randperm(n_blocks, generator=g).tolist()
    shared = [perm.pop() for _ in range(shared_blocks)]
    tables, starts, computed, t = [], [], [], 0
    for ql, own in zip(q_lens, own_cached, strict=True):
        nc = shared_blocks * BS + own
        nb = -(-(nc + ql) // BS)
        tables.append(shared + [perm.pop() for _ in range(nb - shared_blocks)])
        starts.append(t)
        computed.append(nc)
        t += ql
    q = torch.randn(t, H, d, generator=g).to(dtype)
    return q, kc, vc, tables, starts, computed


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize(
    "shared,q_lens,own",
    [(3, [20, 17, 32], [0, 5, 2]), (2, [18, 40], [4, 0]), (5, [24, 24, 24, 24], [0, 0, 3, 9])],
)
def test_cascade_equals_reference(low_threshold, dtype, tol, shared, q_lens, own):
    q, kc, vc, tables, starts, computed = case(dtype, shared, q_lens, own)
    g = build_group(starts, q_lens, computed, tables, BS, torch.device("cpu"))
    assert g.shared_blocks == shared
    meta = AttnMetadata(kv_rows=torch.empty(0, dtype=torch.int64), groups=(g,))
    scale = D**-0.5
    out = paged_attention(q, kc, vc, meta, scale, Workspace())
    ref = dense_reference(q, kc, vc, tables, starts, q_lens, computed, scale)
    assert torch.allclose(out.double(), ref, atol=tol, rtol=tol)
    # and the one-pass path (cascade off) agrees
    plain = build_group(starts, q_lens, computed, tables, BS, torch.device("cpu"))
    plain = AttnMetadata(meta.kv_rows, (type(g)(**{**plain.__dict__, "shared_blocks": 0}),))
    one_pass = paged_attention(q, kc, vc, plain, scale, Workspace())
    assert torch.allclose(out.float(), one_pass.float(), atol=tol, rtol=tol)


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts calls into the C++ prefill kernel's wrapper (``attention_folded.attend``)."""
    calls = []
    real = folded.attend

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return real(*args, **kwargs)

    monkeypatch.setattr(folded, "attend", spy)
    return calls


SIZE_64 = [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)]


@pytest.mark.parametrize("dtype,tol", SIZE_64)
def test_cascade_at_head_size_64_equals_reference(low_threshold, kernel_calls, dtype, tol):
    """Head size 64 takes the C++ prefix kernel where the CPU serves the dtype (fp32: AVX-512,
    bf16: AVX512-BF16), for the prefix half and (the call the spy sees) the suffix half."""
    q, kc, vc, tables, starts, computed = case(dtype, 4, [20, 33], [2, 0], d=64)
    g = build_group(starts, [20, 33], computed, tables, BS, torch.device("cpu"))
    meta = AttnMetadata(kv_rows=torch.empty(0, dtype=torch.int64), groups=(g,))
    out = paged_attention(q, kc, vc, meta, 0.125, Workspace())
    ref = dense_reference(q, kc, vc, tables, starts, [20, 33], computed, 0.125)
    assert g.shared_blocks == 4 and (out.double() - ref).abs().max() < tol
    assert kernel_calls == ([dtype] if folded.available(q) else [])


@pytest.mark.parametrize("dtype,tol", SIZE_64)
@pytest.mark.parametrize("own", [[0, 0, 0], [5, 0, 9]])
def test_prefill_groups_at_head_size_64_equal_reference(kernel_calls, own, dtype, tol):
    """No shared prefix: a prefill group (fresh prompts, or chunks after cached tokens) goes
    to the C++ kernel with causal key limits where the CPU serves the dtype."""
    q, kc, vc, tables, starts, computed = case(dtype, 0, [20, 33, 17], own, d=64)
    g = build_group(starts, [20, 33, 17], computed, tables, BS, torch.device("cpu"))
    meta = AttnMetadata(kv_rows=torch.empty(0, dtype=torch.int64), groups=(g,))
    out = paged_attention(q, kc, vc, meta, 0.125, Workspace())
    ref = dense_reference(q, kc, vc, tables, starts, [20, 33, 17], computed, 0.125)
    assert g.shared_blocks == 0 and (out.double() - ref).abs().max() < tol
    assert kernel_calls == ([dtype] if folded.available(q) else [])


def test_shared_prefix_blocks_rules(low_threshold):
    t = [[7, 8, 9, 1, 2], [7, 8, 9, 3], [7, 8, 4]]
    assert shared_prefix_blocks(t, [12, 12, 12], BS) == 2  # the third differs at block 2
    assert shared_prefix_blocks(t[:2], [12, 12], BS) == 3
    assert shared_prefix_blocks(t[:2], [12, 6], BS) == 0  # a query inside block 1: 1 < 2 blocks
    assert shared_prefix_blocks(t[:1], [12], BS) == 0  # one sequence: nothing to share
    assert shared_prefix_blocks([[1, 2, 3], [4, 2, 3]], [12, 12], BS) == 0


def test_threshold_and_short_groups_keep_the_one_pass_path():
    _, _, _, tables, starts, computed = case(torch.float32, 3, [20, 17], [0, 0])
    g = build_group(starts, [20, 17], computed, tables, BS, torch.device("cpu"))
    assert g.shared_blocks == 0  # 12 shared tokens < MIN_SHARED_TOKENS
    q_lens = [1, 1]
    g = build_group([0, 1], q_lens, computed, tables, BS, torch.device("cpu"))
    assert g.shared_blocks == 0  # decode groups go to the in-place kernel
