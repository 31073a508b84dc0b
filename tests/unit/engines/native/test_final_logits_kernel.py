"""The C++ op that ends a decode step (rows of the last hidden state -> final RMSNorm -> lm_head
GEMV -> fp32 logits) gives the same bits as the three torch-level ops it replaces, and the
forward takes it only where ``linear`` would have taken the GEMV."""

import pytest
import torch

from sagellm.engines.native import linear as linear_mod
from sagellm.engines.native import model as model_mod
from sagellm.engines.native.kernels import final_logits_op, kernel_status

pytestmark = pytest.mark.skipif(
    final_logits_op() is None, reason=f"C++ kernels not loaded: {kernel_status()}"
)


def _inputs(dtype, tokens, hidden=576, vocab=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(tokens, hidden, generator=g) * 2).to(dtype)
    norm = (torch.rand(hidden, generator=g) + 0.5).to(dtype)
    lm_head = (torch.randn(vocab, hidden, generator=g) * 0.05).to(dtype)
    return x, norm, lm_head


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [[0], [4], [1, 3], [5, 0, 2, 2]])
def test_same_bits_as_the_torch_ops(dtype, rows):
    x, norm, lm_head = _inputs(dtype, tokens=6, seed=len(rows))
    idx = torch.tensor(rows)
    out = torch.empty(len(rows), lm_head.shape[0])
    final_logits_op()(x, idx, norm, 1e-5, lm_head, out)
    ref = linear_mod.linear(model_mod._final_norm(x[idx], norm, 1e-5), lm_head).float()
    assert torch.equal(out, ref)


def test_bad_input_names_the_field():
    x, norm, lm_head = _inputs(torch.float32, tokens=2)
    out = torch.empty(1, lm_head.shape[0])
    with pytest.raises(RuntimeError, match="outside"):
        final_logits_op()(x, torch.tensor([2]), norm, 1e-5, lm_head, out)
    with pytest.raises(RuntimeError, match="out a contiguous float32"):
        final_logits_op()(x, torch.tensor([0]), norm, 1e-5, lm_head, out.to(torch.bfloat16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_tail_takes_the_op_only_for_gemv_rows(dtype, monkeypatch):
    calls = []
    op = final_logits_op()
    monkeypatch.setattr(model_mod, "final_logits_op", lambda: lambda *a: calls.append(1) or op(*a))
    x, norm, lm_head = _inputs(dtype, tokens=40)
    packed = linear_mod.pack_weight(lm_head, dtype)
    for n in (1, 2, linear_mod.gemv_max_rows(dtype), 32):
        calls.clear()
        idx = torch.arange(n)
        got = model_mod._final_logits(x, idx, norm, 1e-5, lm_head, packed)
        ref = linear_mod.linear(model_mod._final_norm(x[idx], norm, 1e-5), lm_head, None, packed)
        assert torch.equal(got, ref.float())
        gemv = n <= linear_mod.gemv_max_rows(dtype) and (
            packed is None or n < linear_mod.PACKED_MIN_ROWS
        )
        assert calls == ([1] if gemv else []), n
