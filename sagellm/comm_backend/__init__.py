"""comm_backend: communication between the ranks and instances of one deployment.

- Collectives: :class:`CommBackendProtocol` (``all_reduce``, ``all_gather``, ``send``, ``recv``,
  ``barrier``, ``all_reduce_async``) with backends ``mock`` (threads of one process), ``gloo``
  and ``nccl`` (torch.distributed) and ``shm`` (our own shared-memory collectives for ranks on
  one host: a /dev/shm segment with per-rank flags, C++ primitives built once with
  ``torch.utils.cpp_extension``, a pure-torch fallback without a compiler). Join a group with
  ``create_backend(CommConfig(world_size, rank, backend))``; ``run_ranks`` spawns one process
  per rank.
- Every call goes through :class:`CommStats` (bytes, latency in s, bandwidth in bytes/s per
  call; ``begin_step`` / ``end_step`` give a step's comm seconds for ``StepMetrics.comm_s``).
- :class:`CommFusion` buckets small all-reduces; :class:`OverlapWindow` overlaps async ones
  with compute and reports the hidden share.
- :class:`TopologyManager` ``detect_nvlink`` / ``detect_numa`` -> :class:`TopologyInfo`.
- KV movement: :class:`KVTransferChannel` ``.transfer(TransferPlan)`` over ``tcp`` or ``shm``
  transports (``mooncake`` when its transfer engine imports); :class:`ChannelKVConnector`
  implements the vLLM-shaped :class:`KVConnectorBase`
  (prefill = producer, decode = consumer) on top.
- Faults: a dead or silent peer raises :class:`CommPeerLostError` / :class:`CommTimeoutError`
  on every survivor within ``timeout_s``; shm segments are unlinked once all ranks mapped them,
  so a killed process leaks nothing.
Units: bytes, seconds. Imports only ``core`` (and torch).
"""

from sagellm.comm_backend.base import CommBackendBase
from sagellm.comm_backend.errors import CommError, CommPeerLostError, CommTimeoutError
from sagellm.comm_backend.factory import create_backend
from sagellm.comm_backend.fusion import CommFusion
from sagellm.comm_backend.kv_connector import (
    ChannelKVConnector,
    KVConnectorBase,
    KVConnectorMetadata,
    KVRequestSpec,
)
from sagellm.comm_backend.kv_transfer import KVTransferChannel, TransferRecord, open_kv_channel
from sagellm.comm_backend.launch import RankFailedError, run_ranks
from sagellm.comm_backend.mooncake_transport import MooncakeTransport, mooncake_available
from sagellm.comm_backend.overlap import OverlapWindow
from sagellm.comm_backend.protocol import CommBackendProtocol, CommHandle, KVTransportProtocol
from sagellm.comm_backend.shm_ext import load_shm_ops
from sagellm.comm_backend.shm_transport import ShmTransport
from sagellm.comm_backend.stats import CommStats
from sagellm.comm_backend.tcp_transport import TcpTransport
from sagellm.comm_backend.topology import (
    TopologyManager,
    parse_cpulist,
    parse_nvidia_smi_topo,
    read_numa_nodes,
)
from sagellm.comm_backend.types import (
    CommCallRecord,
    CommConfig,
    NumaNode,
    TopologyInfo,
    TransferPlan,
)

__all__ = [
    "ChannelKVConnector",
    "CommBackendBase",
    "CommBackendProtocol",
    "CommCallRecord",
    "CommConfig",
    "CommError",
    "CommFusion",
    "CommHandle",
    "CommPeerLostError",
    "CommStats",
    "CommTimeoutError",
    "KVConnectorBase",
    "KVConnectorMetadata",
    "KVRequestSpec",
    "KVTransferChannel",
    "KVTransportProtocol",
    "MooncakeTransport",
    "NumaNode",
    "OverlapWindow",
    "RankFailedError",
    "ShmTransport",
    "TcpTransport",
    "TopologyInfo",
    "TopologyManager",
    "TransferPlan",
    "TransferRecord",
    "create_backend",
    "load_shm_ops",
    "mooncake_available",
    "open_kv_channel",
    "parse_cpulist",
    "parse_nvidia_smi_topo",
    "read_numa_nodes",
    "run_ranks",
]
