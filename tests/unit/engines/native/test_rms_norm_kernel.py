"""The C++ RMSNorm op the final norm of a CPU step uses equals the torch composition it
replaces (``model._rms_norm``), and the forward takes it."""

import pytest
import torch

from sagellm.engines.native import model as model_mod
from sagellm.engines.native.kernels import kernel_status, rms_norm_op

pytestmark = pytest.mark.skipif(
    rms_norm_op() is None, reason=f"C++ kernels not loaded: {kernel_status()}"
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows,width", [(1, 576), (3, 64), (64, 576), (5, 20)])
def test_equals_torch_rms_norm(dtype, rows, width):
    g = torch.Generator().manual_seed(rows * 1000 + width)
    x = (torch.randn(rows, width, generator=g) * 3).to(dtype)
    w = (torch.rand(width, generator=g) + 0.5).to(dtype)
    got = rms_norm_op()(x, w, 1e-5)
    ref = model_mod._rms_norm(x, w, 1e-5)
    # same formula; only the fp32 sum of squares runs in another order
    tol = 1e-6 if dtype == torch.float32 else 8e-3
    torch.testing.assert_close(got.float(), ref.float(), atol=tol, rtol=tol)


def test_bad_input_names_the_field():
    x = torch.randn(2, 8)
    with pytest.raises(RuntimeError, match="w a contiguous"):
        rms_norm_op()(x, torch.ones(7), 1e-5)


def test_final_norm_takes_the_op_on_cpu(monkeypatch):
    calls = []
    op = rms_norm_op()
    monkeypatch.setattr(model_mod, "rms_norm_op", lambda: lambda *a: calls.append(1) or op(*a))
    x, w = torch.randn(2, 16), torch.ones(16)
    torch.testing.assert_close(model_mod._final_norm(x, w, 1e-6), model_mod._rms_norm(x, w, 1e-6))
    assert calls == [1]
    model_mod._final_norm(x[:, None, :], w, 1e-6)  # 3-D: the torch composition
    assert calls == [1]
