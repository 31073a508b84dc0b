"""Admission checks of a request against a native engine's limits (before it is queued)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request

if TYPE_CHECKING:
    from sagellm.engines.native.engine import NativeEngine


def validate_request(engine: NativeEngine, request: Request) -> None:
    """Raise :class:`InvalidRequestError` naming the field when ``request`` cannot run on
    ``engine``: a request id in use, bad sampling or SLO values, an empty prompt or one that
    fills the context, token ids outside the vocabulary, more KV blocks than the pool (or the
    tenant's hard quota) holds. Reads the engine; changes nothing."""
    rid = request.request_id
    if rid in engine._seqs:
        raise InvalidRequestError(f"request_id {rid!r} is already in use")
    try:
        request.sampling.validate()
    except ValueError as err:
        raise InvalidRequestError(f"request {rid!r}: {err}") from None
    for name in ("ttft_s", "tpot_s"):
        v = getattr(request.slo, name)
        if v is not None and not v > 0:
            raise InvalidRequestError(
                f"request {rid!r}: slo.{name} must be None or > 0 seconds, got {v!r}"
            )
    n = len(request.prompt_token_ids)
    if n == 0:
        raise InvalidRequestError(f"request {rid!r}: prompt is empty (need >= 1 token)")
    if n >= engine.max_model_len:
        raise InvalidRequestError(
            f"request {rid!r}: prompt has {n} tokens; the context is "
            f"max_model_len_tokens={engine.max_model_len}, leaving no room to generate"
        )
    bad = [t for t in request.prompt_token_ids if not 0 <= t < engine.arch.vocab_size]
    if bad:
        raise InvalidRequestError(
            f"request {rid!r}: token ids {bad[:5]} outside [0, {engine.arch.vocab_size})"
        )
    total = min(n + request.sampling.max_tokens, engine.max_model_len)
    need = -(-total // engine.config.block_size_tokens)
    if engine.sparse is not None:  # streaming holds sinks + window (+ one chunk) at most
        need = engine.sparse.peak_blocks(total, engine.config.max_num_batched_tokens)
    if need > engine.kv.num_blocks:
        raise InvalidRequestError(
            f"request {rid!r} needs {need} KV blocks ({total} tokens) but the pool has "
            f"only {engine.kv.num_blocks}; raise num_kv_blocks or kv_cache_bytes"
        )
    reason = engine.kv.quota.rejection_reason(request.tenant_id, need)
    if reason is not None:
        raise InvalidRequestError(f"request {rid!r} rejected: {reason}")
