"""The C++ skinny-linear kernel (``torch.ops.sagellm.gemv``) equals an fp64 reference to the
dtype's rounding for every row count it serves, odd widths included (the AVX512-BF16 loop's
tail), and is what the model's linear layers use for decode-sized inputs."""

import pytest
import torch

from sagellm.accel.quantization import Int8Quantizer
from sagellm.engines.native import linear as linear_mod
from sagellm.engines.native.kernels import gemv_int8_op, gemv_op, kernel_status

pytestmark = pytest.mark.skipif(gemv_op() is None, reason=f"C++ kernels: {kernel_status()}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 16])
@pytest.mark.parametrize(("out_dim", "in_dim"), [(200, 576), (67, 99), (130, 32)])
def test_gemv_matches_fp64(dtype, rows, out_dim, in_dim):
    g = torch.Generator().manual_seed(rows * 1000 + in_dim)
    x = torch.randn(rows, in_dim, generator=g).to(dtype)
    w = torch.randn(out_dim, in_dim, generator=g).to(dtype)
    out = torch.full((rows, out_dim), float("nan"), dtype=dtype)
    gemv_op()(x, w, out)
    ref = x.double() @ w.double().t()
    # fp32: summation-order error only; bf16: one rounding of the fp32 sum to bf16
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.02, rtol=8e-3)
    torch.testing.assert_close(out.double(), ref, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 5, 16])
@pytest.mark.parametrize(("out_dim", "in_dim"), [(96, 576), (33, 70)])
def test_gemv_int8_matches_the_dequantized_weight(dtype, rows, out_dim, in_dim):
    g = torch.Generator().manual_seed(rows + in_dim)
    w = Int8Quantizer().quantize(torch.randn(out_dim, in_dim, generator=g).to(dtype))
    x = torch.randn(rows, in_dim, generator=g).to(dtype)
    out = torch.empty(rows, out_dim, dtype=dtype)
    gemv_int8_op()(x, w.q, w.scale, out)
    ref = x.double() @ w.dequantize().double().t()
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=0.05, rtol=8e-3)
    torch.testing.assert_close(out.double(), ref, **tol)
    if in_dim % 64 == 0:  # torch's own int8 kernel (bf16, K = 70 here) returns inf
        torch.testing.assert_close(out.double(), w.linear(x).double(), **tol)


def test_gemv_rejects_bad_input():
    op = gemv_op()
    w = torch.randn(8, 16)
    with pytest.raises(RuntimeError, match="1..16 rows"):
        op(torch.randn(17, 16), w, torch.empty(17, 8))
    with pytest.raises(RuntimeError, match="one dtype"):
        op(torch.randn(1, 16, dtype=torch.bfloat16), w, torch.empty(1, 8))
    with pytest.raises(RuntimeError, match="shapes"):
        op(torch.randn(1, 15), w, torch.empty(1, 8))


def test_model_linear_routes_decode_rows_to_gemv(monkeypatch):
    calls = []
    real = gemv_op()
    monkeypatch.setattr(
        linear_mod, "gemv_op", lambda: lambda x, w, y: (calls.append(x.shape[0]), real(x, w, y))
    )
    for dtype in (torch.float32, torch.bfloat16):
        calls.clear()
        w, b = torch.randn(32, 16).to(dtype), torch.randn(32).to(dtype)
        most = linear_mod.gemv_max_rows(dtype)
        for rows in (1, most, most + 1, 0):
            x = torch.randn(rows, 16).to(dtype)
            want = (x.double() @ w.double().t() + b.double()).to(dtype)
            fp32 = dtype == torch.float32
            tol = dict(atol=1e-5, rtol=1e-5) if fp32 else dict(atol=0.05, rtol=0.02)
            torch.testing.assert_close(linear_mod.linear(x, w, b), want, **tol)
        assert calls == [1, most]
    # bf16 takes the GEMV further where its GEMM is the widened fp32 one
    widened = not linear_mod.bf16_gemm_native()
    assert linear_mod.gemv_max_rows(torch.bfloat16) == (
        linear_mod.GEMV_MAX_ROWS_WIDENED if widened else linear_mod.GEMV_MAX_ROWS
    )


def test_model_linear_routes_int8_decode_rows(monkeypatch):
    calls = []
    real = gemv_int8_op()

    def spy(x, q, s, y):
        calls.append(x.shape[0])
        real(x, q, s, y)

    monkeypatch.setattr(linear_mod, "gemv_int8_op", lambda: spy)
    w, b = Int8Quantizer().quantize(torch.randn(32, 64)), torch.randn(32)
    for rows in (2, max(linear_mod.INT8_GEMV_ROWS[torch.float32]) + 1):
        x = torch.randn(rows, 64)
        torch.testing.assert_close(linear_mod.linear(x, w, b), w.linear(x) + b)
    assert calls == [2]
