"""Value types of comm_backend: the group config, one collective's record, a KV transfer plan
and the detected topology. All frozen; sizes in bytes, times in seconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sagellm.core.errors import ConfigError

BackendName = Literal["mock", "gloo", "shm", "nccl"]
BACKEND_NAMES: tuple[str, ...] = ("gloo", "mock", "nccl", "shm")
CommOp = Literal["all_reduce", "all_gather", "send", "recv", "barrier"]


@dataclass(frozen=True)
class CommConfig:
    """One process's view of its communication group.

    Invariants: ``0 <= rank < world_size``; ``master_port`` in 1..65535; ``timeout_s > 0``.
    ``group_name`` keys the rendezvous (the shm segment name, the mock world), so two groups on
    one host never meet. ``shm_buffer_bytes`` is the per-rank slot of the shm segment: a larger
    tensor is reduced in chunks of this size.
    """

    world_size: int
    rank: int
    backend: BackendName = "shm"
    master_addr: str = "127.0.0.1"
    master_port: int = 29_500
    group_name: str = "sagellm"
    timeout_s: float = 30.0
    shm_buffer_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        if not isinstance(self.world_size, int) or self.world_size < 1:
            raise ConfigError(f"comm.world_size must be an int >= 1, got {self.world_size!r}")
        if not isinstance(self.rank, int) or not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"comm.rank must be in 0..{self.world_size - 1} (world_size {self.world_size}), "
                f"got {self.rank!r}"
            )
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(
                f"comm.backend must be one of {list(BACKEND_NAMES)}, got {self.backend!r}"
            )
        if not isinstance(self.master_port, int) or not 1 <= self.master_port <= 65_535:
            raise ConfigError(f"comm.master_port must be in 1..65535, got {self.master_port!r}")
        if not self.timeout_s > 0:
            raise ConfigError(f"comm.timeout_s must be > 0, got {self.timeout_s!r}")
        if not self.shm_buffer_bytes >= 4096:
            raise ConfigError(
                f"comm.shm_buffer_bytes must be >= 4096, got {self.shm_buffer_bytes!r}"
            )
        if not self.group_name or not self.group_name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(
                f"comm.group_name must be non-empty letters, digits, '-' or '_', "
                f"got {self.group_name!r}"
            )


@dataclass(frozen=True)
class CommCallRecord:
    """One collective or point-to-point call as the stats hook saw it.

    ``num_bytes`` is the local payload (the input tensor for all_reduce/send/recv, the gathered
    output for all_gather); ``bandwidth_bytes_per_s`` is ``num_bytes / latency_s`` (algorithm
    bandwidth, as nccl-tests' algbw).
    """

    op: CommOp
    num_bytes: int
    latency_s: float
    start_s: float
    backend: str

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.num_bytes / self.latency_s if self.latency_s > 0 else 0.0


@dataclass(frozen=True)
class TransferPlan:
    """Move KV blocks ``block_ids`` from endpoint ``source`` to endpoint ``target``.

        ``total_bytes`` is what crosses the wire (all layers of all blocks) and is checked against
        the registered caches; ``target_block_ids`` defaults to ``block_ids`` (the receiver's block
        numbering differs when its pool allocated other ids); ``layer_ids`` ``None`` means every
        layer; ``request_id`` and ``num_tokens`` tell a KV connector what the blocks hold.
    Invariant: ``len(target_block_ids) == len(block_ids)``.
    """

    source: str
    target: str
    block_ids: tuple[int, ...]
    total_bytes: int
    target_block_ids: tuple[int, ...] | None = None
    layer_ids: tuple[int, ...] | None = None
    request_id: str = ""
    num_tokens: int = 0  # tokens whose KV the blocks hold (0 = not stated)

    def __post_init__(self) -> None:
        if self.total_bytes < 0:
            raise ConfigError(f"transfer_plan.total_bytes must be >= 0, got {self.total_bytes}")
        if self.target_block_ids is not None and len(self.target_block_ids) != len(self.block_ids):
            raise ConfigError(
                f"transfer_plan.target_block_ids has {len(self.target_block_ids)} ids, "
                f"block_ids has {len(self.block_ids)}; they must match"
            )

    @property
    def dest_block_ids(self) -> tuple[int, ...]:
        return self.block_ids if self.target_block_ids is None else self.target_block_ids


GpuLinkKind = Literal["X", "NV", "PIX", "PXB", "PHB", "NODE", "SYS"]


@dataclass(frozen=True)
class NumaNode:
    """One NUMA node: its id, CPUs, memory (bytes) and ``distances`` to every node by id."""

    node_id: int
    cpu_ids: tuple[int, ...]
    memory_bytes: int
    distances: tuple[int, ...] = ()


@dataclass(frozen=True)
class TopologyInfo:
    """What links the ranks of one host.

    ``gpu_links[i][j]`` is the ``nvidia-smi topo -m`` cell ("X", "NV12", "PIX", "SYS", ...);
    ``nvlink`` is True when every GPU pair has an NV link. ``numa`` lists the NUMA nodes; a host
    without /sys NUMA info reports one node holding every CPU.
    """

    num_gpus: int = 0
    gpu_links: tuple[tuple[str, ...], ...] = ()
    gpu_numa_ids: tuple[int | None, ...] = ()
    nvlink: bool = False
    numa: tuple[NumaNode, ...] = field(default_factory=tuple)
    detect_s: float = 0.0

    def nvlink_count(self, i: int, j: int) -> int:
        """Number of bonded NVLinks between GPUs ``i`` and ``j`` (0 when none)."""
        cell = self.gpu_links[i][j]
        return int(cell[2:]) if cell.startswith("NV") and cell[2:].isdigit() else 0
