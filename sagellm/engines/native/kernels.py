"""C++ CPU kernels of the native engine (``csrc/``), compiled on first use and cached.

``paged_attention_op()`` returns ``torch.ops.sagellm.paged_attention``, ``gemv_op()``
``torch.ops.sagellm.gemv`` (skinny linears of decode) and ``decoder_layers_op()``
``torch.ops.sagellm.decoder_layers`` (all layers of a decode-shaped step in one call) once the
extension is built and loaded
(g++ and ninja; a few tens of seconds the first time, then a cached .so under
``$SAGELLM_KERNEL_DIR`` or ``~/.cache/sagellm/kernels``), or None when kernels are switched off
(``SAGELLM_KERNELS=0``, for A/B runs) or the build failed; the reason is in ``kernel_status()``
and the engine then runs the pure-torch path, which computes the same attention.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

import torch

from sagellm.comm_backend.shm_ext import cpu_flags
from sagellm.core.ext_sources import stage_sources

_CSRC = Path(__file__).parent / "csrc"
_SRCS = [
    _CSRC / name
    for name in (
        "paged_attention.cpp",
        "gemv.cpp",
        "decoder_layers.cpp",
        "argmax.cpp",
        "prefix_attention.cpp",
        "final_logits.cpp",
        "gemm_packed.cpp",
        "decode_burst.cpp",
    )
]
_HEADERS = [
    _CSRC / name
    for name in (
        "ops.h",
        "attention_avx512.h",
        "attention_avx2.h",
        "vec_avx512.h",
        "vec_avx2.h",
        "gemm_tile_avx512.h",
        "gemm_tile_avx2.h",
        "steal_split.h",
    )
]
_lock = threading.Lock()


_state: dict[str, object] = {}


def _build_dir() -> Path:
    """One folder per torch version and hash of the sources and CPU flags (``-march=native``),
    so checkouts of different versions (a gate's baseline worktree) never rebuild each other's
    kernels and a home directory moved to another CPU builds afresh; the sources are built from
    their copies in it (``stage_sources``), so checkouts of the same version share one build."""
    root = os.environ.get("SAGELLM_KERNEL_DIR") or Path.home() / ".cache" / "sagellm" / "kernels"
    srcs = b"".join(p.read_bytes() for p in _SRCS + _HEADERS)
    h = hashlib.sha256(srcs + cpu_flags()).hexdigest()[:12]
    d = Path(root) / f"torch-{torch.__version__.replace('+', '-')}-{h}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _load() -> None:
    if os.environ.get("SAGELLM_KERNELS", "1") == "0":
        _state["status"] = "off (SAGELLM_KERNELS=0)"
        return
    try:
        from torch.utils.cpp_extension import load

        build_dir = _build_dir()
        staged = stage_sources(_SRCS + _HEADERS, build_dir)[: len(_SRCS)]
        load(
            name="sagellm_kernels",
            sources=[str(p) for p in staged],
            extra_cflags=["-O3", "-march=native", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
        _state["op"] = torch.ops.sagellm.paged_attention
        _state["gemv"] = torch.ops.sagellm.gemv
        _state["gemv_int8"] = torch.ops.sagellm.gemv_int8
        _state["decoder_layers"] = torch.ops.sagellm.decoder_layers
        _state["decoder_layer_halves"] = (
            torch.ops.sagellm.decoder_layer_in,
            torch.ops.sagellm.decoder_layer_out,
        )
        _state["argmax_rows"] = torch.ops.sagellm.argmax_rows
        _state["rms_norm"] = torch.ops.sagellm.rms_norm
        _state["final_logits"] = torch.ops.sagellm.final_logits
        _state["decode_burst"] = torch.ops.sagellm.decode_burst
        if hasattr(torch.ops.sagellm, "prefix_attention"):  # compiled for AVX-512F only
            _state["prefix_attention"] = torch.ops.sagellm.prefix_attention
            _state["prefix_attention_dtypes"] = _dtypes(torch.ops.sagellm.prefix_attention_dtypes)
        if hasattr(torch.ops.sagellm, "gemm_packed"):  # compiled for AVX-512F or AVX2+FMA
            _state["gemm_packed"] = (torch.ops.sagellm.pack_gemm, torch.ops.sagellm.gemm_packed)
            _state["gemm_packed_dtypes"] = _dtypes(torch.ops.sagellm.gemm_packed_dtypes)
            _state["gemm_packed_min_rows"] = int(torch.ops.sagellm.gemm_packed_min_rows())
        _state["status"] = "loaded"
    except Exception as err:  # any build failure falls back to the torch ops
        _state["status"] = f"build failed: {type(err).__name__}: {err}"
        warnings.warn(f"sagellm C++ kernels unavailable, using torch ops: {err}", stacklevel=3)


def _dtypes(names_op) -> frozenset[torch.dtype]:
    """The torch dtypes an op's ``*_dtypes()`` companion names (e.g. "float32", "bfloat16")."""
    return frozenset(getattr(torch, d) for d in names_op())


def _loaded(key: str, default=None):
    """``_state[key]`` once the extension is loaded (or has failed to), else ``default``."""
    paged_attention_op()
    return _state.get(key, default)


def paged_attention_op():
    """The loaded op, or None (see module docstring)."""
    if "status" not in _state:
        with _lock:
            if "status" not in _state:
                _load()
    return _state.get("op")


def gemv_op():
    """``torch.ops.sagellm.gemv`` (x [M <= 16, I], w [O, I], out [M, O]), or None like
    ``paged_attention_op``."""
    return _loaded("gemv")


def gemv_int8_op():
    """``torch.ops.sagellm.gemv_int8`` (x [M <= 16, I], int8 w [O, I], scale [O], out [M, O]),
    or None like ``paged_attention_op``."""
    return _loaded("gemv_int8")


def decoder_layers_op():
    """``torch.ops.sagellm.decoder_layers`` (csrc/decoder_layers.cpp: every layer of a step
    whose attention groups the in-place kernel serves), or None like ``paged_attention_op``."""
    return _loaded("decoder_layers")


def decoder_layer_halves_op():
    """``(torch.ops.sagellm.decoder_layer_in, decoder_layer_out)`` (csrc/decoder_layers.cpp:
    one layer before and after attention, for steps whose attention runs in Python), or None
    like ``paged_attention_op``."""
    return _loaded("decoder_layer_halves")


def argmax_rows_op():
    """``torch.ops.sagellm.argmax_rows`` (csrc/argmax.cpp: ``argmax(dim=-1)`` of fp32
    [N, V] logits), or None like ``paged_attention_op``."""
    return _loaded("argmax_rows")


def rms_norm_op():
    """``torch.ops.sagellm.rms_norm`` (csrc/decoder_layers.cpp: RMSNorm of the rows of a
    contiguous fp32 or bf16 [M, N] tensor, as the C++ layers apply it), or None like
    ``paged_attention_op``."""
    return _loaded("rms_norm")


def final_logits_op():
    """``torch.ops.sagellm.final_logits`` (csrc/final_logits.cpp: fp32 logits of a few rows of
    the last hidden state through the final RMSNorm and the lm_head's GEMV or packed GEMM), or
    None like ``paged_attention_op``."""
    return _loaded("final_logits")


def decode_burst_op():
    """``torch.ops.sagellm.decode_burst`` (csrc/decode_burst.cpp: several greedy decode steps
    of up to 16 sequences in one call, each the one-step path's ops), or None like
    ``paged_attention_op``."""
    return _loaded("decode_burst")


def prefix_attention_op():
    """``torch.ops.sagellm.prefix_attention`` (csrc/prefix_attention.cpp: q [G, M, D] over
    k, v [G, L, D] -> (out, lse), in ``prefix_attention_dtypes()``), or None where the CPU
    lacks AVX-512F or as ``paged_attention_op``."""
    return _loaded("prefix_attention")


def prefix_attention_dtypes() -> frozenset[torch.dtype]:
    """The dtypes ``prefix_attention_op`` serves here: float32, and bfloat16 where the CPU has
    AVX512-BF16; empty where the op is absent."""
    return _loaded("prefix_attention_dtypes", frozenset())


def gemm_packed_ops():
    """``(torch.ops.sagellm.pack_gemm, torch.ops.sagellm.gemm_packed)`` (csrc/gemm_packed.cpp:
    linears over a weight packed once, in ``gemm_packed_dtypes()``), or None where the CPU has
    neither AVX-512F nor AVX2 with FMA, or as ``paged_attention_op``."""
    return _loaded("gemm_packed")


def gemm_packed_dtypes() -> frozenset[torch.dtype]:
    """The dtypes ``gemm_packed_ops`` serves here: float32, and bfloat16 where the CPU has
    AVX512-BF16 or is AVX2-only (AVX-512F without AVX512-BF16 leaves bf16 to oneDNN); empty
    where the ops are absent."""
    return _loaded("gemm_packed_dtypes", frozenset())


def gemm_packed_min_rows() -> int | None:
    """The fewest rows ``linear`` gives ``gemm_packed_ops``' GEMM rather than the GEMV: 1 on
    AVX2 (its one-row tile), 2 on AVX-512; None where the ops are absent."""
    return _loaded("gemm_packed_min_rows")


def kernel_status() -> str:
    paged_attention_op()
    return str(_state["status"])
