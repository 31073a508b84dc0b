"""``CommFusion``: bucket many small all-reduces into one (the gradient-bucket idea of DDP and
Megatron, applied to TP activations).

``all_reduce(t)`` only queues ``t``; ``flush()`` packs the queued tensors of each dtype into one
flat buffer (in queue order), issues one all-reduce per bucket of at most ``bucket_bytes`` and
copies the sums back into the original tensors. A tensor is never split across buckets, so a
tensor larger than ``bucket_bytes`` gets a bucket of its own. Results equal the unfused
all-reduces on a backend whose sum is elementwise in rank order (mock, shm): packing changes
which collective carries an element, not how it is summed. Every rank must queue the same
shapes in the same order (as for unfused collectives).
"""

from __future__ import annotations

import torch

from sagellm.comm_backend.protocol import CommBackendProtocol
from sagellm.core.errors import ConfigError


class CommFusion:
    """Queue of pending all-reduces flushed as few large ones (see the module docstring)."""

    def __init__(self, backend: CommBackendProtocol, bucket_bytes: int = 4 << 20) -> None:
        if bucket_bytes < 1:
            raise ConfigError(f"comm_fusion.bucket_bytes must be >= 1, got {bucket_bytes}")
        self.backend = backend
        self.bucket_bytes = bucket_bytes
        self._queue: list[torch.Tensor] = []
        self.num_collectives = 0  # issued by flush, over the object's life
        self.num_tensors = 0  # fused into them

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Queue ``tensor``; it holds the sum after the next :meth:`flush`."""
        if not tensor.is_contiguous():
            raise ConfigError("comm_fusion: tensor must be contiguous")
        self._queue.append(tensor)
        return tensor

    def _buckets(self) -> list[list[torch.Tensor]]:
        by_dtype: dict[torch.dtype, list[list[torch.Tensor]]] = {}
        for t in self._queue:
            buckets = by_dtype.setdefault(t.dtype, [[]])
            cur = buckets[-1]
            cur_bytes = sum(x.numel() * x.element_size() for x in cur)
            if cur and cur_bytes + t.numel() * t.element_size() > self.bucket_bytes:
                buckets.append([t])
            else:
                cur.append(t)
        return [b for bs in by_dtype.values() for b in bs if b]

    def flush(self) -> int:
        """Issue the queued all-reduces as buckets; returns the number of collectives."""
        buckets = self._buckets()
        self._queue = []
        for bucket in buckets:
            if len(bucket) == 1:
                self.backend.all_reduce(bucket[0])
            else:
                flat = torch.cat([t.view(-1) for t in bucket])
                self.backend.all_reduce(flat)
                offset = 0
                for t in bucket:
                    t.view(-1).copy_(flat[offset : offset + t.numel()])
                    offset += t.numel()
            self.num_tensors += len(bucket)
        self.num_collectives += len(buckets)
        return len(buckets)

    @property
    def num_pending(self) -> int:
        return len(self._queue)
