"""Loads the shm C++ primitives (``shm_kernels.cpp``), compiling them once per source hash.

The build goes through ``torch.utils.cpp_extension.load`` (g++ and ninja, ``-O3
-march=native``) into ``$SAGELLM_EXT_DIR`` or ``~/.cache/sagellm/torch_ext/<torch, python,
hash of source + CPU flags>/``; a later process finds the built ``.so`` and only imports it
(a file lock serialises concurrent first builds).

Fallback, stated: when no C++ compiler or ninja is found (or the build fails), ``load_shm_ops``
returns :class:`TorchShmOps`, the same primitives in plain torch. That path is correct on x86-64
(TSO: aligned 8-byte stores are atomic and not reordered with earlier stores) but holds the GIL
while spinning and is slower; ``shm_ops_kind()`` says which one loaded. ``make venv`` builds
the extension (``load_shm_ops()`` once), so tests do not pay the compile.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from sagellm.comm_backend.shm_segment import DONE, FLAG_WORDS, READY, REDUCED
from sagellm.core.ext_sources import stage_sources

_SRC = Path(__file__).with_name("shm_kernels.cpp")
_OPS = None
_KIND: list[str] = []  # "cpp" or "torch" once loaded


def _slot_views(
    raw: torch.Tensor, slots_off: int, slot_bytes: int, chunk: torch.Tensor, world: int, me: int
) -> tuple[list[torch.Tensor], list[int]]:
    """Every rank's data slot viewed as ``chunk``'s dtype and size, and the other ranks."""
    nbytes = chunk.nbytes
    slots = [
        raw[slots_off + r * slot_bytes : slots_off + r * slot_bytes + nbytes].view(chunk.dtype)
        for r in range(world)
    ]
    return slots, [r for r in range(world) if r != me]


class TorchShmOps:
    """Pure-torch stand-in for the C++ primitives (see the module docstring)."""

    @staticmethod
    def store_release(flags: torch.Tensor, index: int, value: int) -> None:
        flags[index] = value

    @staticmethod
    def load_acquire(flags: torch.Tensor, index: int) -> int:
        return int(flags[index])

    @staticmethod
    def wait_geq(flags: torch.Tensor, indices: list[int], target: int, slice_s: float) -> int:
        deadline = time.perf_counter() + slice_s
        checks = 0
        while True:
            for i in indices:
                if int(flags[i]) < target:
                    break
            else:
                return -1
            if time.perf_counter() > deadline:
                return i
            checks += 1
            if checks < 64:
                os.sched_yield()
            else:
                time.sleep(20e-6)  # the late rank may need this core (see shm_kernels.cpp)

    @staticmethod
    def reduce_into(out: torch.Tensor, srcs: list[torch.Tensor]) -> None:
        acc = srcs[0].to(torch.float32, copy=True)  # never write into a source
        for s in srcs[1:]:
            acc += s
        out.copy_(acc)

    @staticmethod
    def copy_bytes(dst: torch.Tensor, src: torch.Tensor) -> None:
        dst.copy_(src)

    @classmethod
    def all_reduce_chunk(
        cls,
        raw: torch.Tensor,
        rank_flags: torch.Tensor,
        slots_off: int,
        slot_bytes: int,
        chunk: torch.Tensor,
        world: int,
        me: int,
        seq: int,
        stage: int,
        slice_s: float,
    ) -> int:
        """The stages of ``all_reduce_chunk`` in shm_kernels.cpp, from these primitives."""
        n = chunk.numel()
        slots, others = _slot_views(raw, slots_off, slot_bytes, chunk, world, me)
        for st, word, target in ((0, DONE, seq - 1), (1, READY, seq), (2, REDUCED, seq)):
            if stage > st:
                continue
            behind = cls.wait_geq(
                rank_flags, [r * FLAG_WORDS + word for r in others], target, slice_s
            )
            if behind >= 0:
                return (st << 32) | behind
            if st == 0:
                cls.copy_bytes(slots[me], chunk)
                cls.store_release(rank_flags, me * FLAG_WORDS + READY, seq)
            elif st == 1:
                lo, hi = n * me // world, n * (me + 1) // world
                if hi > lo:
                    cls.reduce_into(slots[me][lo:hi], [s[lo:hi] for s in slots])
                cls.store_release(rank_flags, me * FLAG_WORDS + REDUCED, seq)
        for r in range(world):
            lo, hi = n * r // world, n * (r + 1) // world
            if hi > lo:
                cls.copy_bytes(chunk[lo:hi], slots[r][lo:hi])
        cls.store_release(rank_flags, me * FLAG_WORDS + DONE, seq)
        return -1

    @classmethod
    def all_gather_chunk(
        cls,
        raw: torch.Tensor,
        rank_flags: torch.Tensor,
        slots_off: int,
        slot_bytes: int,
        chunk: torch.Tensor,
        out: torch.Tensor,
        start: int,
        world: int,
        me: int,
        seq: int,
        stage: int,
        slice_s: float,
    ) -> int:
        """The stages of ``all_gather_chunk`` in shm_kernels.cpp, from these primitives."""
        n = chunk.numel()
        slots, others = _slot_views(raw, slots_off, slot_bytes, chunk, world, me)
        if stage <= 0:
            flags = [r * FLAG_WORDS + DONE for r in others]
            behind = cls.wait_geq(rank_flags, flags, seq - 1, slice_s)
            if behind >= 0:
                return behind
            cls.copy_bytes(slots[me], chunk)
            cls.store_release(rank_flags, me * FLAG_WORDS + READY, seq)
        behind = cls.wait_geq(rank_flags, [r * FLAG_WORDS + READY for r in others], seq, slice_s)
        if behind >= 0:
            return (1 << 32) | behind
        for r in range(world):
            cls.copy_bytes(out[r, start : start + n], slots[r])
        cls.store_release(rank_flags, me * FLAG_WORDS + REDUCED, seq)
        cls.store_release(rank_flags, me * FLAG_WORDS + DONE, seq)
        return -1


def cpu_flags() -> bytes:
    """This CPU's feature flags: the build uses -march=native, so a cached .so must not be
    loaded on a CPU with fewer features (a home directory can move between machines)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            return next((ln for ln in f if ln.startswith(b"flags")), b"")
    except OSError:
        return b""


def _build_dir() -> Path:
    root = os.environ.get("SAGELLM_EXT_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "sagellm" / "torch_ext"
    digest = hashlib.sha256(_SRC.read_bytes() + cpu_flags()).hexdigest()[:12]
    d = base / f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{digest}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def compiler_available() -> bool:
    return shutil.which(os.environ.get("CXX", "c++")) is not None and (
        shutil.which("ninja") is not None
    )


def load_shm_ops():
    """The shm primitives: the compiled extension, or :class:`TorchShmOps` without a compiler."""
    global _OPS
    if _OPS is not None:
        return _OPS
    if os.environ.get("SAGELLM_SHM_PURE_TORCH") == "1" or not compiler_available():
        _OPS = TorchShmOps()
        _KIND.append("torch")
        return _OPS
    from torch.utils.cpp_extension import load

    try:
        build_dir = _build_dir()  # keyed by the source's hash; built from its copy there
        _OPS = load(
            name="sagellm_shm_ops",
            sources=[str(p) for p in stage_sources([_SRC], build_dir)],
            build_directory=str(build_dir),
            extra_cflags=["-O3", "-march=native", "-fopenmp-simd"],
            verbose=False,
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        warnings.warn(
            f"shm C++ ops failed to build ({e}); using the pure-torch fallback", stacklevel=2
        )
        _OPS = TorchShmOps()
        _KIND.append("torch")
        return _OPS
    _KIND.append("cpp")
    return _OPS


def shm_ops_kind() -> str | None:
    """ "cpp" (the compiled extension), "torch" (the fallback) or None before the first load."""
    return _KIND[-1] if _KIND else None
