"""comm_backend: CommBackendProtocol (gloo/nccl/mock), TopologyManager, CommFusion, OverlapWindow,
KVTransferChannel. Filled by its own issue.
"""
