"""Weight-only int4, asymmetric, one (scale, min) pair per group of ``group_size`` input columns.

Per output row ``n`` and group ``g`` (columns ``g*G .. g*G+G-1``)::

    W[n, k] ~= q[n, k] * scale[n, g] + min[n, g],   q in [0, 15]

Round-to-nearest (``Int4Quantizer``) picks ``min``/``scale`` from the group's range; AWQ and GPTQ
produce the same storage by other means. The CPU matmul is torch's
``_weight_int4pack_mm_for_cpu`` over ``_convert_weight_to_int4pack_for_cpu`` (two 4-bit values
per byte), whose dequantization is ``(q - 8) * scale + zero``, hence ``zero = min + 8 * scale``.
That kernel takes group sizes 32, 64, 128 and 256; it is used for output sizes divisible by 64,
whose packed layout ``unpack_int4_cpu`` reads back (bytes ``[N/B, K, B/2]``: low nibble row
``Bb + j``, high nibble row ``Bb + B/2 + j``, with the block ``B`` torch picks for the CPU: 64
on AVX-512, 32 on AVX2; ``int4_pack_block_rows`` finds it once by packing a probe, and a test
checks the unpacked levels against the kernel). Calls with
more than ``KERNEL_MAX_ROWS`` rows (prefill) unpack and dequantize once and use the dense GEMM.
Elsewhere (other devices, other output sizes) the dequantized weight is kept (correct, not fast).

An optional ``input_scale`` [in] (AWQ) multiplies ``x`` before the kernel: the stored weight is
``W * diag(1 / input_scale)`` quantized.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sagellm.accel.quantization.base import BaseQuantizer, CalibrationStats
from sagellm.accel.quantization.protocol import KERNEL_MAX_ROWS
from sagellm.core.errors import ConfigError

KERNEL_GROUP_SIZES: tuple[int, ...] = (32, 64, 128, 256)


def allowed_group_sizes(in_features: list[int]) -> list[int]:
    """Kernel group sizes that divide every one of ``in_features``."""
    return [g for g in KERNEL_GROUP_SIZES if all(k % g == 0 for k in in_features)]


def check_group_size(group_size: int, in_features: list[int]) -> None:
    """ConfigError naming ``accel.group_size`` and the sizes this model allows."""
    ok = allowed_group_sizes(in_features)
    if group_size not in ok:
        raise ConfigError(
            f"accel.group_size={group_size} is not allowed for this model (input dimensions "
            f"{sorted(set(in_features))}); allowed values: {ok}"
        )


def int4_group_params(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale, min) of ``w`` [N, G] for 16 levels; a flat group gets scale 1e-8."""
    mn = w.amin(dim=1)
    mx = w.amax(dim=1)
    scale = ((mx - mn) / 15.0).clamp_(min=1e-8)
    return scale, mn


def quantize_to_levels(w: torch.Tensor, scale: torch.Tensor, mn: torch.Tensor) -> torch.Tensor:
    """Nearest level q in [0, 15] (same leading shape as scale/min, last dim broadcast)."""
    return torch.round((w - mn[..., None]) / scale[..., None]).clamp_(0, 15)


def quantize_int4_rtn(
    w: torch.Tensor, group_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [N, K] int32, scale [N, K/G], min [N, K/G]) by round-to-nearest, all from fp32 math."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group_size, group_size)
    mn = wg.amin(dim=-1)
    scale = ((wg.amax(dim=-1) - mn) / 15.0).clamp_(min=1e-8)
    q = quantize_to_levels(wg, scale, mn)
    return q.reshape(n, k).to(torch.int32), scale, mn


def dequantize_int4(
    q: torch.Tensor, scale: torch.Tensor, mn: torch.Tensor, group_size: int
) -> torch.Tensor:
    n, k = q.shape
    qg = q.float().reshape(n, k // group_size, group_size)
    return (qg * scale[..., None] + mn[..., None]).reshape(n, k)


def _unpack(packed: torch.Tensor, n: int, k: int, block_rows: int) -> torch.Tensor:
    p = packed.view(n // block_rows, k, block_rows // 2)
    q = torch.cat([p & 15, p >> 4], dim=2)  # [n/B, k, B]: row Bb + j
    return q.permute(0, 2, 1).reshape(n, k)


@functools.cache
def int4_pack_block_rows() -> int:
    """Output rows per block of ``_convert_weight_to_int4pack_for_cpu``'s layout on this CPU
    (torch's kernel picks it by the CPU's vector width), found by packing a probe [64, 32]
    of seeded random levels (its rows differ, so only the right layout reads it back)."""
    gen = torch.Generator().manual_seed(0)
    probe = torch.randint(0, 16, (64, 32), dtype=torch.int32, generator=gen)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(probe, 1)
    for rows in (64, 32, 16):
        if torch.equal(_unpack(packed, 64, 32, rows).to(torch.int32), probe):
            return rows
    raise RuntimeError("unknown int4 pack layout of _convert_weight_to_int4pack_for_cpu")


def unpack_int4_cpu(packed: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Levels q [n, k] (uint8) from ``_convert_weight_to_int4pack_for_cpu``'s bytes
    (``n % 64 == 0``)."""
    return _unpack(packed, n, k, int4_pack_block_rows())


class Int4Linear:
    """Packed int4 weights + per-group scales/zeros in the layout the CPU kernel wants."""

    def __init__(
        self,
        q: torch.Tensor,
        scale: torch.Tensor,
        mn: torch.Tensor,
        group_size: int,
        dtype: torch.dtype,
        input_scale: torch.Tensor | None = None,
    ) -> None:
        self.out_features, self.in_features = q.shape
        self.group_size = group_size
        self.device = q.device
        zero = mn + 8.0 * scale
        # [K/G, N, 2] (scale, zero) in the activation dtype
        self.scale_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        self.scale_zeros = self.scale_zeros.to(dtype)
        self.input_scale = None if input_scale is None else input_scale.to(dtype).contiguous()
        if self.device.type == "cpu" and self.out_features % 64 == 0:
            self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(
                q.to(torch.int32).contiguous(), 1
            )
            self._dense: torch.Tensor | None = None
        else:  # no int4 kernel wired for this device: keep the dequantized weight
            self.packed = q.to(torch.uint8)
            self._dense = dequantize_int4(q, scale, mn, group_size).to(dtype)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x * self.input_scale
        if self._dense is not None:
            return F.linear(x, self._dense)
        if x.shape[0] > KERNEL_MAX_ROWS:
            return F.linear(x, self.weight_as(x.dtype))
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.contiguous(), self.packed, self.group_size, self.scale_zeros
        )

    def weight_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The stored weight (without input scale) [out, in] in ``dtype``, as the kernel sees it."""
        n, k, g = self.out_features, self.in_features, self.group_size
        q = unpack_int4_cpu(self.packed, n, k).view(n, k // g, g).to(dtype)
        sz = self.scale_zeros.to(dtype).transpose(0, 1)  # [N, K/G, 2]
        return ((q - 8) * sz[..., 0:1] + sz[..., 1:2]).view(n, k)

    def dequantize(self) -> torch.Tensor:
        """The effective weight on ``x`` (input scale folded back in), fp32 [out, in]."""
        w = self._dense.float() if self._dense is not None else self.weight_as(torch.float32)
        if self.input_scale is not None:
            w = w * self.input_scale.float()[None, :]
        return w

    @property
    def num_bytes(self) -> int:
        n = self.out_features * self.in_features // 2  # two values per byte
        n += self.scale_zeros.numel() * self.scale_zeros.element_size()
        if self.input_scale is not None:
            n += self.input_scale.numel() * self.input_scale.element_size()
        return n


class Int4Quantizer(BaseQuantizer):
    """Group-wise round-to-nearest int4 (the baseline AWQ and GPTQ improve on)."""

    name = "int4"

    def __init__(self, group_size: int = 64) -> None:
        self.group_size = group_size

    def quantize_groups(
        self, weight: torch.Tensor, stats: CalibrationStats | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(q, scale, min, input_scale or None): the storage ``Int4Linear`` is built from."""
        q, scale, mn = quantize_int4_rtn(weight, self.group_size)
        return q, scale, mn, None

    def quantize(self, weight: torch.Tensor, stats: CalibrationStats | None = None) -> Int4Linear:
        q, scale, mn, input_scale = self.quantize_groups(weight, stats)
        return Int4Linear(q, scale, mn, self.group_size, weight.dtype, input_scale)
