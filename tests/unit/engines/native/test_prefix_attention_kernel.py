"""The prefix-attention kernel (cascade prefill's shared-prefix half, and folded causal
prefill) equals an fp64 softmax reference in every dtype it serves, returns the log-sum-exp
the merge needs, and rejects bad dtypes and shapes."""

import pytest
import torch

from sagellm.engines.native.kernels import (
    kernel_status,
    prefix_attention_dtypes,
    prefix_attention_op,
)

op = prefix_attention_op()
pytestmark = pytest.mark.skipif(
    op is None, reason=f"no AVX-512 prefix kernel here ({kernel_status()})"
)
# (dtype, max |out - reference|): bf16 rounds p and the output; fp32 keeps every value fp32
SERVED = [
    pytest.param(d, tol, marks=pytest.mark.skipif(d not in prefix_attention_dtypes(), reason=why))
    for d, tol, why in [
        (torch.float32, 1e-5, "kernel absent"),
        (torch.bfloat16, 2e-2, "no AVX512-BF16 here"),
    ]
]


def reference(q, k, v, scale):
    s = (q.double() @ k.double().transpose(1, 2)) * scale
    return s.softmax(-1) @ v.double(), s.logsumexp(-1)


@pytest.mark.parametrize("dtype,tol", SERVED)
@pytest.mark.parametrize(
    "G,M,L,D",
    [(3, 37, 50, 64), (2, 5, 16, 32), (1, 9, 33, 128), (2, 7, 20, 96), (3, 64, 1, 64)],
)
def test_kernel_equals_fp64_reference(G, M, L, D, dtype, tol):
    g = torch.Generator().manual_seed(G * 1000 + M + L)
    q, k, v = (torch.randn(G, n, D, generator=g).to(dtype) for n in (M, L, L))
    out, lse = op(q, k, v, D**-0.5)
    ref, ref_lse = reference(q, k, v, D**-0.5)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert (out.double() - ref).abs().max() < tol
    assert (lse.double() - ref_lse).abs().max() < 1e-5  # scores and sums in fp32


@pytest.mark.parametrize("dtype,tol", SERVED)
def test_large_scores_do_not_overflow(dtype, tol):
    q = torch.full((1, 4, 64), 8.0).to(dtype)
    k = torch.randn(1, 40, 64).to(dtype) * 8
    v = torch.randn(1, 40, 64).to(dtype)
    out, lse = op(q, k, v, 1.0)
    ref, ref_lse = reference(q, k, v, 1.0)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert (out.double() - ref).abs().max() < tol
    assert ((lse.double() - ref_lse) / ref_lse.abs()).abs().max() < 1e-5


def test_bad_inputs_name_the_rule():
    x = torch.randn(1, 4, 64)
    with pytest.raises(RuntimeError, match="one dtype: float32"):
        op(x.double(), x.double(), x.double(), 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):
        op(x, x.bfloat16(), x, 1.0)
    with pytest.raises(RuntimeError, match="multiple of 32"):
        op(x[..., :48].contiguous(), x[..., :48].contiguous(), x[..., :48].contiguous(), 1.0)


@pytest.mark.parametrize("dtype,tol", SERVED)
@pytest.mark.parametrize("D", [64, 128])
def test_per_row_key_limits_are_a_causal_mask(D, dtype, tol):
    G, M, L = 4, 23, 45
    g = torch.Generator().manual_seed(D)
    q, k, v = (torch.randn(G, n, D, generator=g).to(dtype) for n in (M, L, L))
    limits = torch.randint(1, L + 1, (G, M), generator=g)
    limits[0] = torch.arange(1, M + 1)  # a causal staircase
    limits[1, :5] = 0  # below 1 is clamped to 1 (every query sees key 0)
    out, lse = op(q, k, v, 0.3, limits)
    s = (q.double() @ k.double().transpose(1, 2)) * 0.3
    keep = torch.arange(L)[None, None, :] < limits.clamp(min=1)[:, :, None]
    s = s.masked_fill(~keep, float("-inf"))
    assert (out.double() - s.softmax(-1) @ v.double()).abs().max() < tol
    assert (lse.double() - s.logsumexp(-1)).abs().max() < 1e-5
    with pytest.raises(RuntimeError, match="limits"):
        op(q, k, v, 0.3, limits[:, :5].contiguous())


def test_dtypes_name_float32_and_bf16_where_the_cpu_has_it():
    from sagellm.engines.native.kernels import cpu_flags

    want = {torch.float32} | ({torch.bfloat16} if b"avx512_bf16" in cpu_flags() else set())
    assert prefix_attention_dtypes() == want
