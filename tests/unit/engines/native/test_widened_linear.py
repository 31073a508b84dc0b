"""bf16 linears widened to fp32 (CPUs without a bf16 GEMM): the chunked product equals the
whole fp32 product rounded once, including a last chunk shorter than the others."""

import torch

from sagellm.engines.native import linear as linear_mod
from sagellm.engines.native.linear import WIDEN_CHUNK_ROWS, linear, widened_linear


def test_widened_equals_fp32_product_rounded_once():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2 * WIDEN_CHUNK_ROWS + 37, 96, generator=g).to(torch.bfloat16)
    x = torch.randn(9, 96, generator=g).to(torch.bfloat16)
    ref = torch.nn.functional.linear(x.float(), w.float()).to(torch.bfloat16)
    got = widened_linear(x, w)
    assert got.dtype == torch.bfloat16 and got.shape == ref.shape
    torch.testing.assert_close(got.float(), ref.float(), atol=0, rtol=2**-7)


def test_linear_widens_bf16_only_without_native_gemm(monkeypatch):
    calls = []
    monkeypatch.setattr(linear_mod, "_BF16_GEMM_NATIVE", False)
    monkeypatch.setattr(linear_mod, "widened_linear", lambda x, w: calls.append(x.shape) or x @ w.T)
    w, b = torch.randn(64, 32).to(torch.bfloat16), torch.randn(64).to(torch.bfloat16)
    rows = linear_mod.GEMV_MAX_ROWS_WIDENED + 1  # fewer go to the GEMV
    linear(torch.randn(rows, 32).to(torch.bfloat16), w, b)
    linear(torch.randn(rows, 32), w.float())  # fp32: never widened
    assert calls == [torch.Size([rows, 32])]
