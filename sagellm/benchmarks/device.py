"""Device facts measured, not assumed: peak GEMM FLOP/s (for MFU) and a calibration time
(a fixed reference workload timed in the same run, so the gate can compare machines and
moments of different speed).

The peak is measured once per (device, dtype, threads) and cached in
``$SAGELLM_CACHE/peak_flops.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time

import torch

from sagellm.engines.native.tokenizer import cache_dir

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_key(device: str, dtype: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = platform.processor() or platform.machine()
    return f"{name}|{dtype}|threads={torch.get_num_threads()}"


def measure_peak_flops(
    device: str = "cpu", dtype: str = "float32", n: int = 1536, min_time_s: float = 0.0
) -> float:
    """Best FLOP/s of an n x n x n GEMM (2 n^3 FLOPs) in ``dtype`` on ``device`` (bf16 on a CPU
    without a bf16 GEMM: widened to fp32, the engine's kernel there), over at
    least 5 runs and at least ``min_time_s`` seconds of them. Noise only slows a GEMM down,
    so the best run is the estimate; a longer window keeps one slow spell of a shared machine
    from halving the peak (and doubling every MFU read against it)."""
    from sagellm.engines.native.linear import bf16_gemm_native

    dev = torch.device(device)
    a = torch.randn(n, n, dtype=_DTYPES[dtype], device=dev)
    b = torch.randn(n, n, dtype=_DTYPES[dtype], device=dev)
    gemm = lambda: a @ b  # noqa: E731
    if dev.type == "cpu" and dtype == "bfloat16" and not bf16_gemm_native():
        # no bf16 GEMM on this CPU (AVX2 only; torch's emulated one ran 0.9 GFLOP/s on 2 Zen 3
        # cores): the best bf16 product widens to fp32 and rounds once, as the engine does
        gemm = lambda: (a.float() @ b.float()).to(a.dtype)  # noqa: E731
    return 2.0 * n**3 / _best_s(gemm, dev, min_time_s, warmup=2)


def measure_read_bandwidth(
    device: str = "cpu", num_bytes: int = 512 * 1024**2, min_time_s: float = 0.0
) -> float:
    """Best bytes/s of reading a ``num_bytes`` fp32 tensor once (a ``sum`` and an ``amax``:
    one read per element, nothing written back; the faster reduction counts, each over at
    least 5 runs and ``min_time_s`` seconds). The buffer should be far larger than the
    last-level cache (the default 512 MiB is), so the rate is DRAM's, the roofline of batch-1
    decode (which streams every weight once). On this project's 2-core VM ``amax`` read
    ~7% faster than ``sum`` and the rate moved by +-10% over minutes (shared host)."""
    dev = torch.device(device)
    x = torch.ones(max(1, num_bytes // 4), dtype=torch.float32, device=dev)
    best_s = min(_best_s(f, dev, min_time_s, warmup=1) for f in (x.sum, x.amax))
    return x.numel() * 4 / best_s


def _best_s(fn, dev: torch.device, min_time_s: float, warmup: int) -> float:
    """Fastest seconds of ``fn()`` (synchronised) over at least 5 runs and ``min_time_s``
    seconds of them, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(dev)
    best = float("inf")
    start = time.perf_counter()
    runs = 0
    while runs < 5 or time.perf_counter() - start < min_time_s:
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
        runs += 1
    return best


def peak_flops(device: str = "cpu", dtype: str = "float32") -> float:
    """Cached :func:`measure_peak_flops` (measured once per device/dtype/threads)."""
    path = cache_dir() / "peak_flops.json"
    key = device_key(device, dtype)
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if key not in table:
        table[key] = measure_peak_flops(device, dtype)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(table, indent=1))
            tmp.replace(path)
        except OSError:
            pass
    return float(table[key])


def calibration_s(device: str = "cpu", dtype: str = "float32", repeats: int = 7) -> float:
    """Median seconds of a fixed decoder-like workload (GEMMs of a 576-wide model over 256
    rows, an attention-sized batched matmul, elementwise ops). Time metrics divided by it are
    comparable across machines and load levels."""
    dev = torch.device(device)
    dt = _DTYPES[dtype]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(256, 576, generator=g).to(dev, dt)
    w1 = torch.randn(3072, 576, generator=g).to(dev, dt)
    w2 = torch.randn(576, 1536, generator=g).to(dev, dt)
    k = torch.randn(64, 3, 384, 64, generator=g).to(dev, dt)

    def work() -> None:
        h = x
        for _ in range(4):
            gu = torch.nn.functional.linear(h, w1)
            a, b = gu.chunk(2, dim=-1)
            h = h + torch.nn.functional.linear(torch.nn.functional.silu(a) * b, w2)
        q = k[:, :, :3]
        torch.matmul(q, k.transpose(-1, -2)).softmax(-1) @ k

    work()
    _sync(dev)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        work()
        _sync(dev)
        times.append(time.perf_counter() - t)
    return statistics.median(times)
