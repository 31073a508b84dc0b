"""Move a prefilled request from one native engine to another in the same process.

The prompt's KV blocks are copied from the source cache into freshly allocated blocks of the
destination cache (same layout: ``kv[layer, K|V, block, kv_head, slot, head_dim]``); the
destination then holds the request as running with ``num_computed_tokens == prompt length``
and its first token, so its next step is a decode. The source frees the blocks and forgets the
sequence (it does not count as finished there). Timestamps carry over (one process, one clock).
"""

from __future__ import annotations

import torch

from sagellm.core.types import RequestId
from sagellm.engines.native.engine import NativeEngine
from sagellm.engines.native.kv_manager import AllocStatus
from sagellm.engines.native.sequence import SeqStatus
from sagellm.engines.native.sparse_hook import StreamingHook
from sagellm.engines.native.tp_group import TPUnsupportedError


def _check_whole_tables(src: NativeEngine, dst: NativeEngine) -> None:
    for name, eng in (("src", src), ("dst", dst)):
        if eng.config.tp_size > 1:  # the other ranks' KV heads would stay behind
            raise TPUnsupportedError(
                f"{name} engine has tp_size {eng.config.tp_size}; PD handoff copies one "
                "process's KV cache and needs tp_size 1 on both engines"
            )
        if isinstance(eng.sparse, StreamingHook):  # its tables hold freed (None) blocks
            raise ValueError(
                f"{name} engine uses accel.sparsity_method 'streaming'; PD handoff copies whole "
                "block tables and supports dense or quest attention only"
            )


def check_compatible(src: NativeEngine, dst: NativeEngine) -> None:
    """ValueError naming the mismatch when KV blocks cannot be copied between the two."""
    _check_whole_tables(src, dst)
    a, b = src.cache.kv, dst.cache.kv
    if a.dtype != b.dtype:
        raise ValueError(f"kv dtype differs: {a.dtype} vs {b.dtype}")
    if a.shape[:2] + a.shape[3:] != b.shape[:2] + b.shape[3:]:
        raise ValueError(
            f"kv layout differs (layers, K|V, kv_heads, block_size_tokens, head_dim): "
            f"{tuple(a.shape)} vs {tuple(b.shape)}"
        )


def transfer_prefilled(src: NativeEngine, dst: NativeEngine, request_id: RequestId) -> bool:
    """Hand ``request_id`` (prefilled and running on ``src``) to ``dst``.

    Returns False, changing nothing, when ``dst`` lacks free KV blocks or the tenant's quota
    there is spent (retry later).
    Raises ValueError when the request is not a prefilled running request of ``src``.
    """
    _check_whole_tables(src, dst)
    seq = next((s for s in src.queues.running if s.request_id == request_id), None)
    if seq is None or seq.num_computed_tokens < seq.num_prompt_tokens:
        raise ValueError(f"request {request_id!r} is not a prefilled running request of src")
    n = seq.num_computed_tokens
    nb = -(-n // src.config.block_size_tokens)
    tenant = seq.request.tenant_id
    if dst.kv.num_available_blocks < nb or not dst.kv.quota.can_charge(tenant, nb):
        return False  # no blocks (or no quota) on dst yet: retry later
    dst.add_request(seq.request)
    dseq = dst.queues.waiting[-1]
    status = dst.kv.allocate(dseq, nb)
    if status is not AllocStatus.OK:
        raise RuntimeError(f"request {request_id!r}: {status.value} after a successful check")
    kv = src.cache.kv
    idx_src = torch.tensor(seq.block_ids[:nb], dtype=torch.int64, device=kv.device)
    idx_dst = torch.tensor(dseq.block_ids, dtype=torch.int64, device=kv.device)
    dst.cache.kv.index_copy_(2, idx_dst, kv.index_select(2, idx_src))
    dseq.token_ids = list(seq.token_ids)
    dseq.num_computed_tokens = n
    dst.queues.start(dseq)
    m, dm = seq.metrics, dseq.metrics
    dm.arrival_s, dm.scheduled_s, dm.first_token_s = m.arrival_s, m.scheduled_s, m.first_token_s
    dm.token_times_s = list(m.token_times_s)
    dm.num_output_tokens = m.num_output_tokens
    dm.preemptions = m.preemptions
    src.queues.release(seq)
    seq.status = SeqStatus.FINISHED  # handed off: no output, no finish reason on src
    return True
