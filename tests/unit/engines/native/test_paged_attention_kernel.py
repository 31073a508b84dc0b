"""The in-place C++ paged attention kernel equals a dense fp64 reference (and the torch path)
on scattered block tables, mixed query lengths and GQA, in fp32 and bf16."""

import pytest
import torch
from attention_reference import dense_reference, run_kernel, scattered_tables

from sagellm.engines.native.attention import AttnMetadata, Workspace, build_group, paged_attention
from sagellm.engines.native.kernels import kernel_status, paged_attention_op

pytestmark = pytest.mark.skipif(
    paged_attention_op() is None, reason=f"C++ kernels not loaded: {kernel_status()}"
)

BS, KVH, H, D = 4, 2, 6, 16


def case(dtype, q_lens, num_computed, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_blocks = 40
    kc = torch.randn(n_blocks, KVH, BS, D, generator=g).to(dtype)
    vc = torch.randn(n_blocks, KVH, BS, D, generator=g).to(dtype)
    tables, starts, t = scattered_tables(q_lens, num_computed, BS, n_blocks, g)
    q = torch.randn(t, H, D, generator=g).to(dtype)
    return q, kc, vc, tables, starts


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize(
    "q_lens,num_computed",
    [([1, 1, 1], [0, 7, 30]), ([3, 1, 16], [5, 12, 0]), ([8], [33])],
)
@pytest.mark.parametrize("portable", [False, True])
def test_kernel_equals_dense_reference(dtype, tol, q_lens, num_computed, portable, monkeypatch):
    """Both loops (the AVX-512 one-pass loop where the CPU has it, and the portable two-pass
    loop) equal the fp64 reference."""
    if portable:
        monkeypatch.setenv("SAGELLM_ATTENTION_PORTABLE", "1")
    q, kc, vc, tables, starts = case(dtype, q_lens, num_computed)
    scale = D**-0.5
    group = build_group(starts, q_lens, num_computed, tables, BS, torch.device("cpu"))
    out = torch.full_like(q, float("nan"))
    run_kernel(q, kc, vc, group, scale, out)
    ref = dense_reference(q, kc, vc, tables, starts, q_lens, num_computed, scale)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


def test_engine_entry_point_uses_kernel_and_matches_torch_path(monkeypatch):
    """``paged_attention`` with the kernel equals the gather + SDPA path on the same inputs."""
    import sagellm.engines.native.attention as attn

    q_lens, num_computed = [1, 4, 1], [9, 3, 20]
    q, kc, vc, tables, starts = case(torch.float32, q_lens, num_computed, seed=1)
    meta = AttnMetadata(
        kv_rows=torch.empty(0, dtype=torch.int64),
        groups=(build_group(starts, q_lens, num_computed, tables, BS, torch.device("cpu")),),
    )
    fast = paged_attention(q, kc, vc, meta, D**-0.5, Workspace())
    monkeypatch.setattr(attn, "paged_attention_op", lambda: None)
    slow = paged_attention(q, kc, vc, meta, D**-0.5, Workspace())
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("D", [16, 32, 64, 128])
@pytest.mark.parametrize("bs", [16, 6, 40])
@pytest.mark.parametrize("q_scale", [1.0, 30.0])
def test_vector_loop_head_sizes_partial_chunks_and_peaked_softmax(dtype, tol, D, bs, q_scale):
    """The vector loop (AVX-512 or AVX2, by CPU) for every head size it serves, blocks whose
    size is not a multiple of its chunk (or, 40, of the AVX2 loop's 32-key tile), and queries
    scaled so the softmax is peaked (the max grows across chunks; most weights underflow)
    equals the fp64 reference."""
    g = torch.Generator().manual_seed(D * 7 + bs)
    kvh, G, n_blocks = 2, 3, 64
    q_lens, num_computed = [1, 2, 1], [0, 45, 130]
    kc = torch.randn(n_blocks, kvh, bs, D, generator=g).to(dtype)
    vc = torch.randn(n_blocks, kvh, bs, D, generator=g).to(dtype)
    tables, starts, t = scattered_tables(q_lens, num_computed, bs, n_blocks, g)
    q = (torch.randn(t, kvh * G, D, generator=g) * q_scale).to(dtype)
    grp = build_group(starts, q_lens, num_computed, tables, bs, torch.device("cpu"))
    out = torch.full_like(q, float("nan"))
    scale = D**-0.5
    run_kernel(q, kc, vc, grp, scale, out)
    ref = dense_reference(q, kc, vc, tables, starts, q_lens, num_computed, scale)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_shared_prefix_tables_and_prefetched_blocks(dtype, tol):
    """Sequences whose tables share leading blocks (a cached prefix: the driver skips
    prefetching a block the previous sequence had at the same place) next to unshared ones of
    other lengths, in decode and prefill rows, at SmolLM2's shape (D 64, G 3, 32-token blocks),
    equal the fp64 reference."""
    g = torch.Generator().manual_seed(5)
    kvh, G, D, bs, n_blocks = 3, 3, 64, 32, 96
    kc = torch.randn(n_blocks, kvh, bs, D, generator=g).to(dtype)
    vc = torch.randn(n_blocks, kvh, bs, D, generator=g).to(dtype)
    perm = torch.randperm(n_blocks, generator=g).tolist()
    prefix = [perm.pop() for _ in range(4)]
    q_lens = [1, 1, 5, 1, 1, 3, 1]
    num_computed = [130, 200, 140, 20, 131, 0, 250]
    shared = [True, True, True, False, True, False, False]
    tables, starts, t = [], [], 0
    for ql, nc, sh in zip(q_lens, num_computed, shared, strict=True):
        n = -(-(nc + ql) // bs)
        head = prefix[: min(n, 4)] if sh else []
        tables.append(head + [perm.pop() for _ in range(n - len(head))])
        starts.append(t)
        t += ql
    q = torch.randn(t, kvh * G, D, generator=g).to(dtype)
    grp = build_group(starts, q_lens, num_computed, tables, bs, torch.device("cpu"))
    out = torch.full_like(q, float("nan"))
    scale = D**-0.5
    run_kernel(q, kc, vc, grp, scale, out)
    ref = dense_reference(q, kc, vc, tables, starts, q_lens, num_computed, scale)
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("portable", [False, True])
def test_a_nan_key_reaches_the_rows_that_attend_to_it(dtype, portable, monkeypatch):
    """A NaN in one cached K row makes exactly the outputs the fp64 reference makes NaN (the
    query heads of its kv head, in sequences whose tables hold its block): no loop masks it
    away as a padding lane."""
    if portable:
        monkeypatch.setenv("SAGELLM_ATTENTION_PORTABLE", "1")
    g = torch.Generator().manual_seed(11)
    kvh, G, D, bs, n_blocks = 2, 3, 64, 32, 16
    kc = torch.randn(n_blocks, kvh, bs, D, generator=g).to(dtype)
    vc = torch.randn(n_blocks, kvh, bs, D, generator=g).to(dtype)
    q_lens, num_computed = [1, 1], [69, 50]
    tables, starts = [[3, 7, 9], [4, 5]], [0, 1]
    kc[7, 0, 9, 5] = float("nan")  # key 41 of the first sequence, kv head 0
    q = torch.randn(2, kvh * G, D, generator=g).to(dtype)
    grp = build_group(starts, q_lens, num_computed, tables, bs, torch.device("cpu"))
    out = torch.zeros_like(q)
    scale = D**-0.5
    run_kernel(q, kc, vc, grp, scale, out)
    ref = dense_reference(q, kc, vc, tables, starts, q_lens, num_computed, scale)
    assert ref[0, :G].isnan().all() and not ref[0, G:].isnan().any()
    assert not ref[1].isnan().any()
    torch.testing.assert_close(out.double(), ref, atol=2e-2, rtol=2e-2, equal_nan=True)
