"""The C++ row argmax equals ``torch.argmax(dim=-1)``: random rows, ties (first index wins,
across lanes, chunks and the masked tail), NaN (the first NaN wins, as torch treats NaN as the
largest), -inf and single-column rows; the sampler's greedy pick uses it."""

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
    t = torch.randn(2, 300, generator=g)
    t[0, 295] = float("nan")  # only in the masked tail (300 = 9 * 32 + 12)
    t[1, 290] = t[1, 299] = t[1].max() + 1  # a tie inside the tail
    yield t


@pytest.mark.parametrize("cols", [*range(1, 70), 1000, 49152, 49153])
def test_ties_in_every_lane_and_tail(cols):
    """Few distinct values, so the maximum repeats across lanes, chunks and the tail."""
    g = torch.Generator().manual_seed(cols)
    x = torch.randint(-3, 3, (8, cols), generator=g).float()
    assert torch.equal(argmax_rows_op()(x), torch.argmax(x, dim=-1))


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
