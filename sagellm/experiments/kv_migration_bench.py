"""Tier migration bandwidth per direction against a plain memcpy of the same bytes.

Blocks have the canonical layout of a model's KV block (SmolLM2-135M by default: 30 layers,
3 KV heads, head_dim 64, 16 tokens, fp32 = 720 KiB per block). Each direction moves
``num_blocks`` blocks with :class:`KVMigrator`, ``chunk_blocks`` per migration as the engine
does (device -> host -> disk -> host -> device); a first untimed round trip warms allocator
pages and the page cache. ``memcpy`` is ``Tensor.copy_`` of one contiguous buffer of the same
total size, timed in the same run.

Run: ``python -m sagellm.experiments.kv_migration_bench --blocks 128``
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from sagellm.engines.native.runtime import tune_malloc
from sagellm.kv_runtime import HierarchyManager, KVMigrator, KVPool, MigrationPlan

SMOLLM2_BLOCK = (30, 2, 3, 16, 64)  # layers, K|V, kv_heads, block_size_tokens, head_dim
ROUND_TRIP = (("device", "host"), ("host", "disk"), ("disk", "host"), ("host", "device"))


def memcpy_bandwidth(num_bytes: int, repeats: int = 3) -> float:
    """Best-of-``repeats`` bytes/s of ``dst.copy_(src)`` for one contiguous buffer."""
    src = torch.randn(num_bytes // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch pages first
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return num_bytes / best


def _move_all(mig: KVMigrator, src: str, dst: str, ids: list[int], chunk: int):
    out: list[int] = []
    nbytes, secs = 0, 0.0
    for i in range(0, len(ids), chunk):
        res = mig.migrate(MigrationPlan(src, dst, tuple(ids[i : i + chunk])))  # type: ignore[arg-type]
        out += res.dst_block_ids
        nbytes += res.num_bytes
        secs += res.latency_s
    return out, nbytes, secs


def migration_bandwidth(
    num_blocks: int = 128,
    block_shape: tuple[int, ...] = SMOLLM2_BLOCK,
    dtype: torch.dtype = torch.float32,
    chunk_blocks: int = 16,
    cache_dir: str | None = None,
) -> list[dict[str, float | str]]:
    """One row per direction plus a ``memcpy`` row: bytes, seconds, GB/s, ratio to memcpy."""
    tune_malloc()  # as the engine does: freed buffers stay mapped
    layers, kv2, *rest = block_shape
    device = KVPool(torch.randn(layers, kv2, num_blocks, *rest, dtype=dtype), block_dim=2)
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        h = HierarchyManager.build(device, block_shape, dtype, num_blocks, num_blocks, tmp)
        mig = KVMigrator(h)
        ids = list(device.allocate(num_blocks).block_ids)
        before = device.read_blocks(ids)[0].clone()
        for rnd in range(2):
            for src, dst in ROUND_TRIP:
                ids, nbytes, secs = _move_all(mig, src, dst, ids, chunk_blocks)
                if rnd == 1:
                    rows.append(
                        {
                            "direction": f"{src}->{dst}",
                            "num_blocks": float(num_blocks),
                            "num_bytes": float(nbytes),
                            "latency_s": secs,
                            "bandwidth_gb_per_s": nbytes / secs / 1e9,
                        }
                    )
        intact = torch.equal(device.read_blocks(ids)[0], before)
        h.close()
    nbytes = float(rows[0]["num_bytes"])
    mem = memcpy_bandwidth(int(nbytes))
    rows.append(
        {
            "direction": "memcpy",
            "num_blocks": float(num_blocks),
            "num_bytes": nbytes,
            "latency_s": nbytes / mem,
            "bandwidth_gb_per_s": mem / 1e9,
        }
    )
    for r in rows:
        r["ratio_to_memcpy"] = float(r["bandwidth_gb_per_s"]) / (mem / 1e9)
        r["data_intact"] = float(intact)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--blocks", type=int, default=128)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="where the disk tier writes (default /tmp)")
    args = p.parse_args(argv)
    for r in migration_bandwidth(args.blocks, chunk_blocks=args.chunk, cache_dir=args.cache_dir):
        print(
            f"{r['direction']:14s} {float(r['num_bytes']) / 2**20:8.1f} MiB"
            f"  {float(r['latency_s']) * 1e3:8.1f} ms  {r['bandwidth_gb_per_s']:6.2f} GB/s"
            f"  x{r['ratio_to_memcpy']:.3f} of memcpy  intact={bool(r['data_intact'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
