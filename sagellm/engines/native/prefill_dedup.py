"""Deferring a waiting request whose next prompt block another request of the same step writes.

With prefix caching, a block becomes a cache hit only after the step that computes it (the
``kv_store`` node indexes it). Two waiting requests with a common prefix admitted in one step
would both compute that prefix: the second cannot hit blocks the first has not written yet.
So, like SGLang's in-batch prefix check, a waiting request whose first block to compute this
step is one an earlier item of the same step completes is left out of the step; the next
step's lookup finds the block cached and the request computes only what follows it.

Chained hashes make one comparison enough: block ``j``'s hash covers blocks ``0..j``, so a
request whose first written block does not match any block being written shares no later
block with them either.

The deferred request loses nothing it could have used this step (its tokens up to the shared
block would only have recomputed another item's), the first request of a group is never
deferred (no stall), and running requests are never deferred.
"""

from __future__ import annotations

from sagellm.engines.native.sequence import Sequence
from sagellm.scheduler_ir.types import SchedulerState, StepDecision


def defer_shared_prefills(
    decision: StepDecision, state: SchedulerState, seqs: dict[str, Sequence], kv
) -> StepDecision:
    """``decision`` without the waiting items whose first block to compute is completed by an
    earlier item of the same decision (``kv``: the engine's ``NativeKVManager``; a no-op
    without prefix caching). Item order and every other item are kept."""
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
            if not v.running and hashes[first] in writing:
                continue
            writing.update(hashes[first:full])
        kept.append((rid, n))
    if len(kept) == len(decision.items):
        return decision
    return StepDecision(items=tuple(kept), preempt=decision.preempt, note=decision.note)
