"""Each quantizer's fast kernel equals the matmul with its own dequantized weight (rebuilt from
the stored integers and scales, not through the kernel), in fp32 and bf16; the quantized weight
is close to the original; AWQ and GPTQ reduce the output error of round-to-nearest on the
calibration inputs they were given (with outlier input channels, the case they exist for)."""

import pytest
import torch

from sagellm.accel.quantization import (
    AWQQuantizer,
    FP8Quantizer,
    GPTQQuantizer,
    Int4Quantizer,
    Int8Quantizer,
    RecordingLinear,
    dequantize_int4,
)
from sagellm.accel.quantization.int8 import quantize_int8_per_channel

# SmolLM2's shapes: qkv, o, gate_up, down (out, in)
SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]
DTYPES = [torch.float32, torch.bfloat16]


def _weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) * 0.05


def _x(t: int, k: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(t, k, generator=torch.Generator().manual_seed(seed))


def _close(y: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    # fp32 kernels match to fp32 rounding; bf16 ones to bf16's 8-bit mantissa over K terms
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    err = float((y.float() - ref).abs().max() / ref.abs().max())
    assert err < tol, err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_int8_kernel_equals_dequantized(shape, dtype):
    w, x = _weight(*shape), _x(5, shape[1])
    q, scale = quantize_int8_per_channel(w.to(dtype))
    ref = x.to(dtype).float() @ (q.float() * scale.to(dtype).float()[:, None]).t()
    _close(Int8Quantizer().quantize(w.to(dtype)).linear(x.to(dtype)), ref, dtype)
    err = (q.float() * scale[:, None] - w.to(dtype).float()).abs()
    assert bool((err <= scale[:, None] / 2 * (1 + 1e-5)).all())  # within half a step per row


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group_size", [32, 64])
@pytest.mark.parametrize("shape", SHAPES)
def test_int4_kernel_equals_dequantized(shape, group_size, dtype):
    w, x = _weight(*shape).to(dtype), _x(5, shape[1]).to(dtype)
    qz = Int4Quantizer(group_size)
    q, scale, mn, _ = qz.quantize_groups(w)
    w_dq = dequantize_int4(q, scale, mn, group_size)
    # scales/zeros are stored in the activation dtype: the reference rounds them the same way
    s_r, z_r = scale.to(dtype).float(), (mn + 8 * scale).to(dtype).float()
    w_ref = (q.float().view(*q.shape[:1], -1, group_size) - 8) * s_r[..., None] + z_r[..., None]
    _close(qz.quantize(w).linear(x), x.float() @ w_ref.view(q.shape).t(), dtype)
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    rel = float((w_dq - w.float()).norm() / w.float().norm())
    assert rel < 0.12, rel  # 16 levels over a Gaussian group: ~9% measured


@pytest.mark.parametrize("dtype", DTYPES)
def test_fp8_kernel_equals_dequantized(dtype):
    w, x = _weight(960, 576).to(dtype), _x(5, 576).to(dtype)
    lin = FP8Quantizer().quantize(w)
    assert lin.q.dtype == torch.float8_e4m3fn
    ref = x.float() @ (lin.q.float() * lin.scale.float()[:, None]).t()
    _close(lin.linear(x), ref, dtype)
    rel = float((lin.dequantize() - w.float()).norm() / w.float().norm())
    assert rel < 0.05, rel  # 3 mantissa bits: ~2-3% measured


def _stats(qz, w: torch.Tensor, x: torch.Tensor):
    rec = RecordingLinear(w, hessian=qz.needs_hessian, rows=qz.needs_rows, row_stride=1)
    rec.linear(x)
    return rec.stats()


@pytest.mark.parametrize("cls", [AWQQuantizer, GPTQQuantizer])
def test_calibrated_int4_kernel_and_error_below_rtn(cls):
    k, gs = 256, 64
    w = _weight(192, k)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(384, k, generator=gen)
    x[:, torch.randperm(k, generator=gen)[:4]] *= 20.0  # outlier channels, as in real LLMs
    qz = cls(gs)
    stats = _stats(qz, w, x)
    q, scale, mn, inv_s = qz.quantize_groups(w, stats)
    w_eff = dequantize_int4(q, scale, mn, gs)
    if inv_s is not None:
        w_eff = w_eff * inv_s[None, :]
    lin = qz.quantize(w, stats)
    _close(lin.linear(x[:7]), x[:7] @ w_eff.t(), torch.float32)
    ref = x @ w.t()
    rtn = dequantize_int4(*Int4Quantizer(gs).quantize_groups(w)[:3], gs)
    err = float((x @ w_eff.t() - ref).pow(2).mean())
    err_rtn = float((x @ rtn.t() - ref).pow(2).mean())
    assert err < 0.8 * err_rtn, (err, err_rtn)


def test_recording_linear_is_exact_and_accumulates():
    w, x = _weight(64, 32), _x(10, 32)
    rec = RecordingLinear(w, hessian=True, rows=True, max_rows=4, row_stride=2)
    torch.testing.assert_close(rec.linear(x), x @ w.t())
    rec.linear(x)
    st = rec.stats()
    assert st.num_tokens == 20 and st.rows.shape == (4, 32)
    torch.testing.assert_close(st.hessian, 2 * x.t() @ x, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(st.abs_mean, x.abs().mean(0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_rows_use_dense_path_with_same_weight(dtype):
    """Above KERNEL_MAX_ROWS rows the weight is dequantized once (int4: unpacked from the
    kernel's own packed bytes); the result equals the kernel's, row by row."""
    from sagellm.accel.quantization.protocol import KERNEL_MAX_ROWS

    w, x = _weight(960, 576).to(dtype), _x(KERNEL_MAX_ROWS + 8, 576).to(dtype)
    for lin in (Int8Quantizer().quantize(w), Int4Quantizer(32).quantize(w)):
        many = lin.linear(x).float()
        rows = torch.cat([lin.linear(x[i : i + 1]) for i in range(x.shape[0])]).float()
        _close(many, rows, dtype)
        _close(many, x.float() @ lin.dequantize().t(), dtype)
