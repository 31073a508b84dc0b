"""The GEMM over a packed weight (csrc/gemm_packed.cpp: AVX-512 CPUs, bf16 with AVX512-BF16;
AVX2 CPUs, both dtypes) equals an fp64 reference to fp32 summation (and bf16's one rounding)
for every row count (the 8- or 6-, 4-, 2- and 1-row tiles, AVX2's split-K one-row tile) and
column count (3-, 2- and 1-panel tails on AVX-512), with and without bias;
threads steal the tail of the split and run every panel once;
the pack is the documented layout; bad inputs name the field; and ``linear``/``pack_weight``
route linears of ``gemm_packed_min_rows()`` or more rows to it (1 on AVX2, 2 on AVX-512)."""

import os
from pathlib import Path

import pytest
import torch

from sagellm.engines.native import linear as linear_mod
from sagellm.engines.native.kernels import (
    gemm_packed_dtypes,
    gemm_packed_min_rows,
    gemm_packed_ops,
    kernel_status,
)

pytestmark = pytest.mark.skipif(
    gemm_packed_ops() is None, reason=f"no AVX-512 or AVX2 GEMM here ({kernel_status()})"
)
DTYPES = [
    pytest.param(
        d,
        marks=pytest.mark.skipif(
            d not in gemm_packed_dtypes(), reason="AVX-512F without AVX512-BF16"
        ),
    )
    for d in (torch.float32, torch.bfloat16)
]


def _tol(dtype, in_dim):
    # fp32 sums of in_dim products (order differs from the reference: error grows with in_dim);
    # bf16: and one rounding to bf16 (2^-9 relative)
    if dtype == torch.float32:
        return dict(atol=2e-6 * in_dim, rtol=1e-5)
    return dict(atol=1e-2, rtol=2**-8)


def _pack(w):
    return gemm_packed_ops()[0](w)


def _gemm(x, wp, bias=None):
    out = torch.full((x.shape[0], wp.shape[0] * 16), float("nan"), dtype=x.dtype)
    gemm_packed_ops()[1](x, wp, torch.empty(0, dtype=x.dtype) if bias is None else bias, out)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 6, 7, 8, 11, 15, 64, 131])
@pytest.mark.parametrize(("out_dim", "in_dim"), [(16, 2), (32, 30), (80, 576), (960, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_matches_fp64(dtype, rows, out_dim, in_dim, with_bias):
    g = torch.Generator().manual_seed(rows * 1000 + out_dim + in_dim)
    x = torch.randn(rows, in_dim, generator=g).to(dtype)
    w = torch.randn(out_dim, in_dim, generator=g).to(dtype)
    bias = torch.randn(out_dim, generator=g).to(dtype) if with_bias else None
    out = _gemm(x, _pack(w), bias)
    ref = x.double() @ w.double().t() + (bias.double() if with_bias else 0.0)
    torch.testing.assert_close(out.double(), ref, **_tol(dtype, in_dim))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threads_steal_the_tail_and_run_every_panel_once(dtype, threads):
    """Panels split across threads, the tail stolen (csrc/steal_split.h): each panel computed
    once by whichever thread claims it, so every panel count, odd ones and fewer panels than
    threads included, gives one thread's bits (a lost panel stays NaN; repeated calls race
    the claims differently)."""
    g = torch.Generator().manual_seed(threads)
    before = torch.get_num_threads()
    try:
        for panels in (1, 2, 3, 5, 36, 97):
            x = torch.randn(1 + panels % 3, 96, generator=g).to(dtype)
            wp = _pack(torch.randn(16 * panels, 96, generator=g).to(dtype))
            torch.set_num_threads(1)
            one = _gemm(x, wp)
            torch.set_num_threads(threads)
            for _ in range(20):
                assert torch.equal(_gemm(x, wp), one)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pack_layout(dtype):
    """wp[nb, g, P c + e] = w[16 nb + c, P g + e] (P = 1 fp32, 2 bf16)."""
    w = torch.arange(32 * 6, dtype=torch.float32).view(32, 6).to(dtype)
    p = 4 // w.element_size()
    wp = _pack(w)
    assert wp.shape == (2, 6 // p, 16 * p)
    for nb in range(2):
        for g in range(6 // p):
            for c in range(16):
                for e in range(p):
                    assert wp[nb, g, p * c + e] == w[16 * nb + c, p * g + e]


def test_bad_inputs_name_the_field():
    wp = _pack(torch.randn(32, 8))
    with pytest.raises(RuntimeError, match="multiple of 16"):
        _pack(torch.randn(20, 8))
    with pytest.raises(RuntimeError, match="not served here; allowed: float32"):
        _pack(torch.randn(32, 8).double())
    with pytest.raises(RuntimeError, match="packed for 8"):
        _gemm(torch.randn(2, 6), wp)
    with pytest.raises(RuntimeError, match="served dtype"):
        _gemm(torch.randn(2, 8).to(torch.float16), wp)
    with pytest.raises(RuntimeError, match="bias"):
        _gemm(torch.randn(2, 8), wp, torch.randn(16))
    if torch.bfloat16 in gemm_packed_dtypes():
        with pytest.raises(RuntimeError, match="multiple of 2"):
            _pack(torch.randn(32, 7).bfloat16())
        with pytest.raises(RuntimeError, match="of x's dtype"):
            _gemm(torch.randn(2, 8).bfloat16(), wp)


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs /proc/cpuinfo")
def test_dtypes_follow_the_cpu():
    flags = Path("/proc/cpuinfo").read_text()
    avx2_only = " avx2" in flags and " fma" in flags and " avx512f" not in flags
    assert torch.float32 in gemm_packed_dtypes()
    assert (torch.bfloat16 in gemm_packed_dtypes()) == (" avx512_bf16" in flags or avx2_only)
    assert gemm_packed_min_rows() == (1 if avx2_only else 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_routes_to_it(dtype, monkeypatch):
    """``pack_weight`` gives served weights this layout, ``linear`` runs it from
    ``gemm_packed_min_rows()`` rows (below that the GEMV); a width the layout cannot hold keeps
    oneDNN's pack. The C++ layers get the same threshold (``linear_rows``)."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(96, 64, generator=g).to(dtype)
    packed = linear_mod.pack_weight(w, dtype)
    p = 4 // w.element_size()
    assert not packed.is_mkldnn and packed.shape == (6, 64 // p, 16 * p)
    calls = []
    pack, gemm = gemm_packed_ops()
    monkeypatch.setattr(
        linear_mod, "gemm_packed_ops", lambda: (pack, lambda *a: calls.append(1) or gemm(*a))
    )
    for rows in (1, 2, 40):
        x = torch.randn(rows, 64, generator=g).to(dtype)
        before = len(calls)
        y = linear_mod.linear(x, w, None, packed)
        assert len(calls) - before == (rows >= gemm_packed_min_rows())
        assert linear_mod.takes_gemv(x, w, rows, packed) == (rows < gemm_packed_min_rows())
        torch.testing.assert_close(y.double(), x.double() @ w.double().t(), **_tol(dtype, 64))
    assert linear_mod.linear_rows(dtype)[3] == gemm_packed_min_rows()
    odd = linear_mod.pack_weight(torch.randn(20, 64, generator=g).to(dtype), dtype)
    assert odd is None or odd.is_mkldnn
