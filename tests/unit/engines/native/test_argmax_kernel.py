"""The C++ row argmax equals ``torch.argmax(dim=-1)``: random rows, ties (first index wins),
NaN (the first NaN wins, as torch treats NaN as the largest), -inf and single-column rows; the
sampler's greedy pick uses it."""

import pytest
import torch

from sagellm.engines.native.kernels import argmax_rows_op, kernel_status
from sagellm.engines.native.sampler import greedy

pytestmark = pytest.mark.skipif(
    argmax_rows_op() is None, reason=f"C++ kernels not loaded: {kernel_status()}"
)


def cases():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 49152, generator=g)
    yield x
    t = torch.randn(5, 300, generator=g)
    t[0, 7] = t[0, 200] = t[0].max() + 1  # a tie: the first index
    t[1, 3] = t[1, 250] = float("nan")  # NaN: the first NaN
    t[2] = float("-inf")
    t[2, 299] = float("-inf")  # all -inf: index 0
    t[3, :] = 0.0
    t[3, 10] = -0.0
    t[4, 299] = float("inf")
    yield t
    yield torch.randn(3, 1, generator=g)
    yield torch.randn(1, 17, generator=g)


@pytest.mark.parametrize("x", list(cases()), ids=lambda x: "x".join(map(str, x.shape)))
def test_equals_torch_argmax(x):
    want = torch.argmax(x, dim=-1)
    assert torch.equal(argmax_rows_op()(x), want)
    assert torch.equal(greedy(x), want)


def test_rejects_other_shapes_and_dtypes():
    with pytest.raises(RuntimeError, match="argmax_rows"):
        argmax_rows_op()(torch.randn(4, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="argmax_rows"):
        argmax_rows_op()(torch.randn(8))
