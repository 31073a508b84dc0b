"""Deferring a waiting request whose next prompt block another request of the same step writes.

With prefix caching, a block becomes a cache hit only after the step that computes it (the
``kv_store`` node indexes it). Two waiting requests with a common prefix admitted in one step
would both compute that prefix: the second cannot hit blocks the first has not written yet.
So, like SGLang's in-batch prefix check, a waiting request whose next ``MIN_DEFER_TOKENS`` or
more prompt tokens an earlier item of the same step completes is left out of the step; the
next step's lookup finds those blocks cached and the request computes only what follows them.
A shorter share is recomputed (see ``MIN_DEFER_TOKENS``).

Chained hashes make the shared blocks a prefix of the request's blocks to compute: block
``j``'s hash covers blocks ``0..j``, so once one block differs no later block matches.

The deferred request loses nothing it could have used this step (its tokens up to the shared
block would only have recomputed another item's), the first request of a group is never
deferred (no stall), and running requests are never deferred.
"""

from __future__ import annotations

from sagellm.engines.native.sequence import Sequence
from sagellm.scheduler_ir.types import SchedulerState, StepDecision

#: Deferring costs the request one step of latency and takes it out of step with the others
#: (its decode steps then carry later arrivals' prefills); recomputing costs the shared tokens
#: again. Measured on the gate's workload (32 shared tokens, 8 concurrent, SmolLM2 fp32, in
#: lockstep against the baseline commit): deferring cut p50 TTFT 42% but raised p50 TPOT 37%
#: and p95 TPOT 99%. On W2 (1,024 shared tokens) deferring saves a second of prefill. So only
#: a share of at least this many tokens defers (the cascade's threshold as well).
MIN_DEFER_TOKENS = 256


def _in_flight_blocks(hashes: list[int], first: int, full: int, writing: set[int]) -> int:
    """How many of blocks ``first..full-1`` (a prefix of them, chained) another item writes."""
    n = first
    while n < full and hashes[n] in writing:
        n += 1
    return n - first


def defer_shared_prefills(
    decision: StepDecision, state: SchedulerState, seqs: dict[str, Sequence], kv
) -> StepDecision:
    """``decision`` without the waiting items whose next ``MIN_DEFER_TOKENS`` or more tokens to
    compute an earlier item of the same decision completes (``kv``: the engine's
    ``NativeKVManager``; a no-op without prefix caching). Item order and the others are kept."""
    if kv.index is None or len(decision.items) < 2:
        return decision
    bs = kv.block_size
    views = state.by_id()
    writing: set[int] = set()  # chained hashes of the full blocks this step completes
    kept = []
    for rid, n in decision.items:
        v, seq = views[rid], seqs[rid]
        start = v.num_computed_tokens if v.running else v.num_prefix_hit_tokens
        end = min(start + n, len(seq.token_ids))
        first, full = start // bs, end // bs  # blocks first..full-1 are complete after it
        if first < full:
            hashes = kv.hashes(seq, full)
            if not v.running and _in_flight_blocks(hashes, first, full, writing) * bs >= (
                MIN_DEFER_TOKENS
            ):
                continue
            writing.update(hashes[first:full])
        kept.append((rid, n))
    if len(kept) == len(decision.items):
        return decision
    return StepDecision(items=tuple(kept), preempt=decision.preempt, note=decision.note)
