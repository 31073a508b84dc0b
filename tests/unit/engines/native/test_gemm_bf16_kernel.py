"""The bf16 GEMM over a packed weight (csrc/gemm_bf16.cpp, AVX512-BF16 CPUs only) equals an
fp64 reference to one bf16 rounding for every row count (the 8-, 4-, 2- and 1-row tiles) and
column count (3-, 2- and 1-panel tails), with and without bias; the pack is the documented
layout; bad inputs name the field; and ``linear``/``pack_weight`` route bf16 linears of 2 or
more rows to it."""

import pytest
import torch

from sagellm.engines.native import linear as linear_mod
from sagellm.engines.native.kernels import gemm_bf16_ops, kernel_status

pytestmark = pytest.mark.skipif(
    gemm_bf16_ops() is None, reason=f"no AVX512-BF16 GEMM here ({kernel_status()})"
)


def _pack(w):
    return gemm_bf16_ops()[0](w)


def _gemm(x, wp, bias=None):
    out = torch.full((x.shape[0], wp.shape[0] * 16), float("nan"), dtype=torch.bfloat16)
    gemm_bf16_ops()[1](x, wp, torch.empty(0, dtype=x.dtype) if bias is None else bias, out)
    return out


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 8, 15, 64, 131])
@pytest.mark.parametrize(("out_dim", "in_dim"), [(16, 2), (32, 30), (80, 576), (960, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_matches_fp64(rows, out_dim, in_dim, with_bias):
    g = torch.Generator().manual_seed(rows * 1000 + out_dim + in_dim)
    x = torch.randn(rows, in_dim, generator=g).bfloat16()
    w = torch.randn(out_dim, in_dim, generator=g).bfloat16()
    bias = torch.randn(out_dim, generator=g).bfloat16() if with_bias else None
    out = _gemm(x, _pack(w), bias)
    ref = x.double() @ w.double().t() + (bias.double() if with_bias else 0.0)
    # fp32 sums (order differs from the reference) and one rounding to bf16 (2^-9 relative)
    torch.testing.assert_close(out.double(), ref, atol=1e-3 * in_dim**0.5, rtol=2**-8)


def test_pack_layout():
    w = torch.arange(32 * 6, dtype=torch.float32).view(32, 6).bfloat16()
    wp = _pack(w)
    assert wp.shape == (2, 3, 32)
    for nb in range(2):
        for kp in range(3):
            for c in range(16):
                for e in range(2):
                    assert wp[nb, kp, 2 * c + e] == w[16 * nb + c, 2 * kp + e]


def test_bad_inputs_name_the_field():
    w = torch.randn(32, 8).bfloat16()
    wp = _pack(w)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        _pack(torch.randn(20, 8).bfloat16())
    with pytest.raises(RuntimeError, match="even"):
        _pack(torch.randn(32, 7).bfloat16())
    with pytest.raises(RuntimeError, match="bfloat16"):
        _pack(torch.randn(32, 8))
    with pytest.raises(RuntimeError, match="packed for 8"):
        _gemm(torch.randn(2, 6).bfloat16(), wp)
    with pytest.raises(RuntimeError, match="x a contiguous CPU bfloat16"):
        _gemm(torch.randn(2, 8), wp)
    with pytest.raises(RuntimeError, match="bias"):
        _gemm(torch.randn(2, 8).bfloat16(), wp, torch.randn(16).bfloat16())


def test_linear_routes_bf16_to_it(monkeypatch):
    """``pack_weight`` gives bf16 weights this layout, ``linear`` runs it from 2 rows (the GEMV
    keeps 1 row); a width the layout cannot hold keeps oneDNN's pack."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(96, 64, generator=g).bfloat16()
    packed = linear_mod.pack_weight(w, torch.bfloat16)
    assert not packed.is_mkldnn and packed.shape == (6, 32, 32)
    calls = []
    pack, gemm = gemm_bf16_ops()
    monkeypatch.setattr(
        linear_mod, "gemm_bf16_ops", lambda: (pack, lambda *a: calls.append(1) or gemm(*a))
    )
    for rows in (1, 2, 40):
        x = torch.randn(rows, 64, generator=g).bfloat16()
        before = len(calls)
        y = linear_mod.linear(x, w, None, packed)
        assert len(calls) - before == (rows >= linear_mod.PACKED_MIN_ROWS)
        torch.testing.assert_close(y.double(), x.double() @ w.double().t(), atol=1e-2, rtol=2**-8)
    odd = linear_mod.pack_weight(torch.randn(20, 64, generator=g).bfloat16(), torch.bfloat16)
    assert odd is None or odd.is_mkldnn
