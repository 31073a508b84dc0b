"""Communication benchmark, every comparison measured in the same run
(``results/comm_bench/<run_id>/``: ``config.json``, ``metrics.json``, ``collectives.parquet``,
``fusion_overlap.parquet``, ``kv_transfer.parquet``).

- all_reduce / all_gather latency (p50 over ``iters`` calls, seconds) and algorithm bandwidth
  (bytes / p50 latency) vs message size, shm vs gloo, for each world size; fp32.
- CommFusion: ``num_small`` all-reduces of ``small_bytes`` each, one by one vs fused.
- OverlapWindow: a TP-shaped loop of ``num_layers`` (GEMM, then all-reduce of its output) over
  two micro-batches, serial vs overlapped (micro-batch B's GEMM while A's all-reduce runs).
- KV transfer: ``num_blocks`` blocks of each block size over tcp and shm between two
  processes, latency p50/p99 per transfer (send to the receiver's ack after scatter) and
  bandwidth, against an in-process gather+scatter memcpy of the same blocks (and over Mooncake's
  transfer engine when ``mooncake.engine`` imports).
Each rank is a process (``run_ranks``); on a shared or small machine the absolute numbers are
contended, the ratios within one run are the result.

Run: ``python -m sagellm.experiments.comm_bench --preset ci`` (seconds) or ``--preset full``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from pathlib import Path

import torch

from sagellm.benchmarks.metrics import percentile
from sagellm.benchmarks.results import SCHEMA_VERSION
from sagellm.benchmarks.run_folder import write_experiment
from sagellm.comm_backend import (
    CommConfig,
    CommFusion,
    OverlapWindow,
    mooncake_available,
    open_kv_channel,
    run_ranks,
)
from sagellm.experiments.prefix_reuse import ExperimentRun

KIB = 1024
PRESETS: dict[str, dict] = {
    "ci": {
        "sizes_bytes": [KIB, 64 * KIB, 1024 * KIB],
        "world_sizes": [2],
        "iters": 20,
        "num_small": 24,
        "small_bytes": 4 * KIB,
        "num_layers": 4,
        "hidden": 256,
        "tokens": 64,
        "kv_block_bytes": [16 * KIB, 1024 * KIB],
        "kv_num_blocks": 8,
        "kv_iters": 10,
    },
    "full": {
        "sizes_bytes": [KIB * 4**i for i in range(9)],  # 1 KiB .. 64 MiB
        "world_sizes": [2, 3],
        "iters": 50,
        "num_small": 60,
        "small_bytes": 4 * KIB,
        "num_layers": 12,
        "hidden": 1024,
        "tokens": 256,
        "kv_block_bytes": [16 * KIB, 256 * KIB, 4096 * KIB],
        "kv_num_blocks": 16,
        "kv_iters": 50,
    },
}


def _p50_s(fn, iters: int) -> float:
    fn()  # warm-up (first-touch of buffers, connection set-up)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rank_bench(be, p: dict) -> dict:
    """Runs on every rank; rank 0's numbers are reported (all ranks do the same work)."""
    rows = []
    for size in p["sizes_bytes"]:
        x = torch.ones(size // 4)
        be.barrier()
        ar = _p50_s(lambda x=x: be.all_reduce(x), p["iters"])
        be.barrier()
        ag = _p50_s(lambda x=x: be.all_gather(x), p["iters"])
        rows.append({"op": "all_reduce", "size_bytes": size, "p50_s": ar})
        rows.append({"op": "all_gather", "size_bytes": size, "p50_s": ag})
    small = [torch.ones(p["small_bytes"] // 4) for _ in range(p["num_small"])]

    def unfused():
        for t in small:
            be.all_reduce(t)

    def fused():
        f = CommFusion(be, bucket_bytes=4 << 20)
        for t in small:
            f.all_reduce(t)
        f.flush()

    be.barrier()
    fo = {"unfused_s": _p50_s(unfused, max(3, p["iters"] // 4))}
    be.barrier()
    fo["fused_s"] = _p50_s(fused, max(3, p["iters"] // 4))
    fo.update(_overlap(be, p))
    return {"rows": rows, "fusion_overlap": fo}


def _overlap(be, p: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(p["hidden"], p["hidden"], generator=g) / p["hidden"] ** 0.5
    mbs = [torch.randn(p["tokens"] // 2, p["hidden"], generator=g) for _ in range(2)]

    def serial():
        xs = [m.clone() for m in mbs]
        for _ in range(p["num_layers"]):
            for i in range(2):
                xs[i] = be.all_reduce(xs[i] @ w)

    stats = {}

    def overlapped():
        xs = [m.clone() for m in mbs]
        win = OverlapWindow(be, max_in_flight=2)
        handles = [None, None]
        for _ in range(p["num_layers"]):
            for i in range(2):
                if handles[i] is not None:
                    win.wait(handles[i])  # this micro-batch's previous all-reduce
                xs[i] = xs[i] @ w  # runs while the other micro-batch's all-reduce is in flight
                handles[i] = win.submit(xs[i])
        win.wait_all()
        stats["eff"] = win.overlap_efficiency

    be.barrier()
    s = _p50_s(serial, max(3, p["iters"] // 4))
    be.barrier()
    o = _p50_s(overlapped, max(3, p["iters"] // 4))
    return {"serial_s": s, "overlap_s": o, "overlap_efficiency": stats.get("eff") or 0.0}


def _kv_sender(port: int, transport: str, block_bytes: int, p: dict) -> None:
    n = p["kv_num_blocks"]
    caches = [torch.randn(2 * n, block_bytes // 4) for _ in range(2)]  # 2 layers
    ch = open_kv_channel("prefill", caches, transport=transport, listen=False, port=port)
    plan = ch.make_plan("decode", list(range(0, 2 * n, 2)), list(range(n)))
    for _ in range(p["kv_iters"] + 1):
        ch.transfer(plan)
        ch.transport.recv()  # the receiver's ack: the blocks are in place
    ch.close()


def _kv_bench(transport: str, block_bytes: int, p: dict) -> dict:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = mp.get_context("spawn").Process(
        target=_kv_sender, args=(port, transport, block_bytes, p), daemon=True
    )
    proc.start()
    n = p["kv_num_blocks"]
    try:
        caches = [torch.zeros(2 * n, block_bytes // 4) for _ in range(2)]
        ch = open_kv_channel("decode", caches, transport=transport, listen=True, port=port,
                             timeout_s=300)  # fmt: skip
        lat = []
        for i in range(p["kv_iters"] + 1):
            t0 = time.perf_counter()
            plan, _ = ch.receive()
            ch.transport.send({"ack": i})
            if i:  # the first includes the sender's start-up
                lat.append(time.perf_counter() - t0)
        ch.close()
    finally:
        proc.join(timeout=60)
        if proc.is_alive():
            proc.kill()
    return {"lat": lat, "total_bytes": plan.total_bytes}


def _memcpy_s(block_bytes: int, p: dict) -> float:
    n = p["kv_num_blocks"]
    src = [torch.randn(2 * n, block_bytes // 4) for _ in range(2)]
    dst = [torch.zeros(2 * n, block_bytes // 4) for _ in range(2)]
    ids_s, ids_d = torch.arange(0, 2 * n, 2), torch.arange(n)

    def copy():
        for a, b in zip(src, dst, strict=True):
            b.index_copy_(0, ids_d, a.index_select(0, ids_s))

    return _p50_s(copy, p["kv_iters"])


def run_comm_bench(
    preset: str = "ci", results_root: str | Path = "results", **overrides
) -> ExperimentRun:
    """Run the benchmark (see the module docstring); write and return the run."""
    import pandas as pd

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    p = {**PRESETS[preset], **overrides}
    coll, fo_rows, metrics = [], [], {"schema_version": float(SCHEMA_VERSION)}
    for ws in p["world_sizes"]:
        for backend in ("shm", "gloo"):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cfg = CommConfig(ws, 0, backend, master_port=port, group_name=f"bench{port}",
                             timeout_s=300)  # fmt: skip
            res = run_ranks(_rank_bench, cfg, args=(p,), timeout_s=1800)[0]
            for r in res["rows"]:
                bw = r["size_bytes"] / r["p50_s"] if r["p50_s"] > 0 else 0.0
                coll.append({**r, "backend": backend, "world_size": ws, "algbw_bytes_per_s": bw})
            fo_rows.append({"backend": backend, "world_size": ws, **res["fusion_overlap"]})
    df = pd.DataFrame(coll)
    for (op, ws, size), g in df.groupby(["op", "world_size", "size_bytes"]):
        by = dict(zip(g.backend, g.p50_s, strict=True))
        metrics[f"{op}_ws{ws}_{size}B_shm_p50_s"] = by["shm"]
        metrics[f"{op}_ws{ws}_{size}B_gloo_p50_s"] = by["gloo"]
        metrics[f"{op}_ws{ws}_{size}B_gloo_over_shm"] = by["gloo"] / by["shm"]
    for r in fo_rows:
        k = f"{r['backend']}_ws{r['world_size']}"
        metrics[f"fusion_{k}_speedup"] = r["unfused_s"] / r["fused_s"]
        metrics[f"overlap_{k}_speedup"] = r["serial_s"] / r["overlap_s"]
        metrics[f"overlap_{k}_efficiency"] = r["overlap_efficiency"]
    kv = []
    for block_bytes in p["kv_block_bytes"]:
        memcpy = _memcpy_s(block_bytes, p)
        for transport in ("tcp", "shm", "mooncake") if mooncake_available() else ("tcp", "shm"):
            r = _kv_bench(transport, block_bytes, p)
            p50, p99 = percentile(r["lat"], 50), percentile(r["lat"], 99)
            kv.append({
                "transport": transport, "block_bytes": block_bytes,
                "total_bytes": r["total_bytes"], "p50_s": p50, "p99_s": p99,
                "bandwidth_bytes_per_s": r["total_bytes"] / p50, "memcpy_p50_s": memcpy,
            })  # fmt: skip
            metrics[f"kv_{transport}_{block_bytes}B_p50_s"] = p50
            metrics[f"kv_{transport}_{block_bytes}B_p99_s"] = p99
            metrics[f"kv_{transport}_{block_bytes}B_bandwidth_bytes_per_s"] = kv[-1][
                "bandwidth_bytes_per_s"
            ]
        metrics[f"kv_memcpy_{block_bytes}B_p50_s"] = memcpy
    tables = {
        "collectives": df,
        "fusion_overlap": pd.DataFrame(fo_rows),
        "kv_transfer": pd.DataFrame(kv),
    }
    run_dir = write_experiment(results_root, "comm_bench", {"preset": preset, **p}, metrics, tables)
    return ExperimentRun(run_dir, metrics, tables)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ci")
    ap.add_argument("--results-root", default="results")
    args = ap.parse_args(argv)
    run = run_comm_bench(args.preset, args.results_root)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        for name, t in run.tables.items():
            print(f"== {name}\n{t.to_string(index=False)}")
    print(f"run folder: {run.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
