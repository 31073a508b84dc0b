"""Admission checks of a request against an engine's limits (before it is queued).

``check_request`` (sampling and SLO values, the prompt against the vocabulary and the context)
and ``check_blocks`` (the KV blocks it needs against a pool) hold the rules that need only an
engine's limits; the native engine (:func:`validate_request`) and the PD front (once per
worker's limits) both run them, so a request is judged by one set of rules wherever it
enters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request

if TYPE_CHECKING:
    from sagellm.engines.native.engine import NativeEngine


def context_tokens(request: Request, max_model_len_tokens: int) -> int:
    """Tokens the request can occupy: prompt plus ``max_tokens``, capped by the context."""
    return min(len(request.prompt_token_ids) + request.sampling.max_tokens, max_model_len_tokens)


def check_request(request: Request, *, vocab_size: int, max_model_len_tokens: int) -> None:
    """Raise :class:`InvalidRequestError` naming the field when ``request`` has bad sampling
    or SLO values, an empty prompt or one that fills the context, or token ids outside
    ``[0, vocab_size)``."""
    rid = request.request_id
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
    if n >= max_model_len_tokens:
        raise InvalidRequestError(
            f"request {rid!r}: prompt has {n} tokens; the context is "
            f"max_model_len_tokens={max_model_len_tokens}, leaving no room to generate"
        )
    bad = [t for t in request.prompt_token_ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(f"request {rid!r}: token ids {bad[:5]} outside [0, {vocab_size})")


def check_blocks(
    request: Request, need_blocks: int, num_kv_blocks: int, total_tokens: int, pool: str
) -> None:
    """Raise :class:`InvalidRequestError` when the request's peak of ``need_blocks`` KV blocks
    (for ``total_tokens``) exceeds the ``num_kv_blocks`` of ``pool`` (named in the message)."""
    if need_blocks > num_kv_blocks:
        rid = request.request_id
        raise InvalidRequestError(
            f"request {rid!r} needs {need_blocks} KV blocks ({total_tokens} tokens) but {pool} has "
            f"only {num_kv_blocks}; raise num_kv_blocks or kv_cache_bytes"
        )


def validate_request(engine: NativeEngine, request: Request) -> None:
    """:func:`check_request` and :func:`check_blocks` against ``engine``'s limits, plus a
    request id in use and the tenant's hard quota. Reads the engine; changes nothing."""
    rid = request.request_id
    if rid in engine._seqs:
        raise InvalidRequestError(f"request_id {rid!r} is already in use")
    check_request(
        request, vocab_size=engine.arch.vocab_size, max_model_len_tokens=engine.max_model_len
    )
    total = context_tokens(request, engine.max_model_len)
    need = -(-total // engine.config.block_size_tokens)
    if engine.sparse is not None:  # streaming holds sinks + window (+ one chunk) at most
        need = engine.sparse.peak_blocks(total, engine.config.max_num_batched_tokens)
    check_blocks(request, need, engine.kv.num_blocks, total, "the pool")
    reason = engine.kv.quota.rejection_reason(request.tenant_id, need)
    if reason is not None:
        raise InvalidRequestError(f"request {rid!r} rejected: {reason}")
