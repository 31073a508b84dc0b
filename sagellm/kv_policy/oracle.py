"""libCacheSim as the oracle for the eviction policies (imported only here, on demand).

Each block lookup becomes one ``libcachesim.Request`` of size 1 against a cache of
``capacity_blocks`` bytes, so object count and byte capacity coincide. On that footing our
five policies reproduce libcachesim 0.3.5's hit counts exactly (tests/unit/kv_policy/
test_libcachesim_differential.py). Definitions we adopted from it, where papers leave room:

- LFU: in-cache counts (forgotten on eviction), ties first-in-first-out within a count.
- ARC: the target ``p`` moves by real-valued steps; REPLACE takes T1 when T2 is empty.
- S3-FIFO: small queue floor(0.1 C), ghost floor(0.9 C), promotion from the small queue needs
  two hits (``move_to_main_threshold=2``; the SOSP'23 paper uses one), main-queue counters
  capped at 3, and before the first eviction a full small queue sends new blocks to main.
  libcachesim cannot cache at all when floor(0.1 C) < 2 (and aborts at C < 10); ours can.
- SIEVE: as in the paper (the hand wraps from head to tail).

Differences that remain are in the runtime, not the policies: byte-sized objects (we count
blocks), and the ``prefix`` replay mode (pinned requests, leaves first), which libCacheSim
has no notion of and so is not compared.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sagellm.core.types import BlockId

#: our registry name -> libcachesim class name
ORACLE_CLASSES = {"lru": "LRU", "lfu": "LFU", "arc": "ARC", "s3fifo": "S3FIFO", "sieve": "Sieve"}


@dataclass(frozen=True)
class OracleResult:
    policy: str
    capacity_blocks: int
    num_requests: int
    num_accesses: int
    num_hits: int
    wall_s: float  # per-request ``cache.get`` loop driven from Python

    @property
    def hit_ratio(self) -> float:
        return self.num_hits / self.num_accesses if self.num_accesses else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.num_requests / self.wall_s if self.wall_s > 0 else 0.0


#: libcachesim's S3FIFO refuses (and aborts the process on) objects not smaller than its small
#: queue, floor(0.1 * capacity): with unit objects it needs a capacity of 20 or more.
MIN_ORACLE_CAPACITY_BLOCKS = {"s3fifo": 20}


def oracle_supports(policy: str, capacity_blocks: int) -> bool:
    """Whether libcachesim can run ``policy`` at ``capacity_blocks`` without aborting."""
    return policy in ORACLE_CLASSES and capacity_blocks >= MIN_ORACLE_CAPACITY_BLOCKS.get(policy, 1)


def make_oracle_cache(policy: str, capacity_blocks: int):
    """A libcachesim cache of ``capacity_blocks`` unit-size objects for ``policy``."""
    import libcachesim

    try:
        cls = getattr(libcachesim, ORACLE_CLASSES[policy])
    except KeyError:
        known = ", ".join(sorted(ORACLE_CLASSES))
        raise ValueError(f"no libcachesim oracle for policy {policy!r}; known: {known}") from None
    if not oracle_supports(policy, capacity_blocks):
        need = MIN_ORACLE_CAPACITY_BLOCKS[policy]
        raise ValueError(f"capacity_blocks must be >= {need} for libcachesim's {policy}")
    return cls(capacity_blocks)


def oracle_replay(
    policy: str, requests: Sequence[Sequence[BlockId]], capacity_blocks: int
) -> OracleResult:
    """Replay ``requests`` through libcachesim's built-in ``policy``; per-lookup ``get``."""
    import libcachesim

    cache = make_oracle_cache(policy, capacity_blocks)
    req = libcachesim.Request()
    req.obj_size = 1
    get = cache.get
    hits = n = 0
    t0 = time.perf_counter()
    for r in requests:
        for b in r:
            req.obj_id = b
            n += 1
            if get(req):
                hits += 1
    wall_s = time.perf_counter() - t0
    return OracleResult(policy, capacity_blocks, len(requests), n, hits, wall_s)


def oracle_process_trace(
    policy: str, requests: Sequence[Sequence[BlockId]], capacity_blocks: int, workdir
) -> tuple[float, float]:
    """libCacheSim's own C loop (``process_trace`` over a plain-text id trace written to
    ``workdir``): returns (hit ratio, seconds inside ``process_trace``)."""
    from pathlib import Path

    import libcachesim

    path = Path(workdir) / "block_ids.txt"
    if not path.exists():
        path.write_text("".join(f"{b}\n" for r in requests for b in r))
    reader = libcachesim.TraceReader(str(path), libcachesim.TraceType.PLAIN_TXT_TRACE)
    cache = make_oracle_cache(policy, capacity_blocks)
    t0 = time.perf_counter()
    miss_ratio, _byte_miss_ratio = cache.process_trace(reader)
    return 1.0 - miss_ratio, time.perf_counter() - t0
