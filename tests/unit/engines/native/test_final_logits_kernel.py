"""The C++ op that ends a decode step (rows of the last hidden state -> final RMSNorm -> lm_head
GEMV or packed GEMM -> fp32 logits) gives the same bits as the three torch-level ops it
replaces, and the forward takes it only where ``linear`` would have taken the GEMV or our packed
GEMM, for at most 16 rows."""

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


def _our_pack(lm_head, dtype):
    """``pack_weight``'s copy where it is our GEMM's layout, else None."""
    packed = linear_mod.pack_weight(lm_head, dtype)
    return packed if packed is not None and not packed.is_mkldnn else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [[0], [4], [1, 3], [5, 0, 2, 2]])
def test_same_bits_as_the_torch_ops(dtype, rows):
    x, norm, lm_head = _inputs(dtype, tokens=6, seed=len(rows))
    idx = torch.tensor(rows)
    out = torch.empty(len(rows), lm_head.shape[0])
    final_logits_op()(x, idx, norm, 1e-5, lm_head, x.new_empty(0), out)
    ref = linear_mod.linear(model_mod._final_norm(x[idx], norm, 1e-5), lm_head).float()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [[0], [1, 3], [5, 0, 2, 2]])
def test_packed_lm_head_same_bits_as_its_gemm(dtype, rows):
    x, norm, lm_head = _inputs(dtype, tokens=6, vocab=3008, seed=len(rows))
    packed = _our_pack(lm_head, dtype)
    if packed is None:
        pytest.skip(f"csrc/gemm_packed.cpp does not serve {dtype} here")
    idx = torch.tensor(rows)
    out = torch.empty(len(rows), lm_head.shape[0])
    final_logits_op()(x, idx, norm, 1e-5, lm_head, packed, out)
    h = model_mod._final_norm(x[idx], norm, 1e-5)
    ref = linear_mod._gemm_packed(h, packed, None).float()
    assert torch.equal(out, ref)
    exact = h.double() @ lm_head.double().t()
    assert (out.double() - exact).abs().max() < (0.05 if dtype == torch.bfloat16 else 1e-4)


def test_bad_input_names_the_field():
    x, norm, lm_head = _inputs(torch.float32, tokens=2)
    out = torch.empty(1, lm_head.shape[0])
    with pytest.raises(RuntimeError, match="outside"):
        final_logits_op()(x, torch.tensor([2]), norm, 1e-5, lm_head, x.new_empty(0), out)
    with pytest.raises(RuntimeError, match="out a contiguous float32"):
        final_logits_op()(
            x, torch.tensor([0]), norm, 1e-5, lm_head, x.new_empty(0), out.to(torch.bfloat16)
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [3000, 3008])  # 3008: our GEMM can pack it
def test_forward_tail_takes_the_op_for_gemv_or_our_packed_rows(dtype, vocab, monkeypatch):
    calls = []
    op = final_logits_op()
    monkeypatch.setattr(model_mod, "final_logits_op", lambda: lambda *a: calls.append(1) or op(*a))
    x, norm, lm_head = _inputs(dtype, tokens=40, vocab=vocab)
    packed = linear_mod.pack_weight(lm_head, dtype)
    ours = packed is not None and not packed.is_mkldnn
    for n in (1, 2, linear_mod.gemv_max_rows(dtype), 16, 32):
        calls.clear()
        idx = torch.arange(n)
        got = model_mod._final_logits(x, idx, norm, 1e-5, lm_head, packed)
        ref = linear_mod.linear(model_mod._final_norm(x[idx], norm, 1e-5), lm_head, None, packed)
        assert torch.equal(got, ref.float())
        gemv = linear_mod.takes_gemv(x, lm_head, n, packed)
        assert calls == ([1] if n <= 16 and (gemv or ours) else []), n
