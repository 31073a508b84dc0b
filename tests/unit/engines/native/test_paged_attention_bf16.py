"""The bf16 in-place attention loop with AVX512-BF16 dot products (head sizes 32, 64, 128:
key pairs interleaved for p.v, head dims permuted in the accumulator and restored on output)
equals an fp64 reference on scattered blocks, GQA groups, partial chunks and several queries
per sequence."""

import pytest
import torch
from attention_reference import dense_reference, run_kernel, scattered_tables

from sagellm.engines.native.attention import build_group
from sagellm.engines.native.kernels import kernel_status, paged_attention_op

pytestmark = pytest.mark.skipif(
    paged_attention_op() is None, reason=f"C++ kernels not loaded: {kernel_status()}"
)

BS, KVH = 16, 2


@pytest.mark.parametrize("D", [32, 64, 128])
@pytest.mark.parametrize("G", [1, 3, 8])
@pytest.mark.parametrize("q_lens,num_computed", [([1, 1, 1], [0, 20, 70]), ([5, 1], [33, 7])])
def test_bf16_loop_equals_fp64_reference(D, G, q_lens, num_computed):
    g = torch.Generator().manual_seed(D + G)
    H, n_blocks = KVH * G, 40
    kc = torch.randn(n_blocks, KVH, BS, D, generator=g).bfloat16()
    vc = torch.randn(n_blocks, KVH, BS, D, generator=g).bfloat16()
    tables, starts, t = scattered_tables(q_lens, num_computed, BS, n_blocks, g)
    q = torch.randn(t, H, D, generator=g).bfloat16()
    grp = build_group(starts, q_lens, num_computed, tables, BS, torch.device("cpu"))
    out = torch.full_like(q, float("nan"))
    scale = D**-0.5
    run_kernel(q, kc, vc, grp, scale, out)
    ref = dense_reference(q, kc, vc, tables, starts, q_lens, num_computed, scale)
    assert (out.double() - ref).abs().max() < 2e-2
