"""Prefill/decode disaggregation across processes.

:class:`PDCluster` runs a prefill process and a decode process (each a native engine on the
one engine path, stepping concurrently) and moves every request's prompt KV between them
through :class:`~sagellm.comm_backend.ChannelKVConnector` over a
:class:`~sagellm.comm_backend.KVTransferChannel` (``shm`` on one host, ``tcp`` selectable);
the front in the calling process has an engine's surface, so ``BenchmarkRunner`` drives it.
The in-process, one-thread variant is :class:`~sagellm.scheduler_ir.pd_runtime.PDRuntime`.
"""

from sagellm.engines.pd.cluster import PDCluster, PDWorkerError
from sagellm.engines.pd.config import PD_TRANSPORTS, PDClusterConfig
from sagellm.engines.pd.worker import kv_planes

__all__ = ["PD_TRANSPORTS", "PDCluster", "PDClusterConfig", "PDWorkerError", "kv_planes"]
