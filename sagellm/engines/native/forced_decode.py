"""Teacher-forced decoding on the engine's own serving path (accuracy of lossy decode paths).

``forced_decode_logits`` queues one greedy request for the prompt and steps the engine; after
each step it replaces the token just sampled by the next target token, so the following decode
step computes the target's KV and the logits predicting the one after. Every position is thus
a real decode step (paged KV, the configured sparse attention, block freeing), unlike a
prefill-style scorer that computes all positions in one forward. Other requests in the engine
keep running meanwhile.
"""

from __future__ import annotations

import torch

from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import Request, SamplingParams
from sagellm.engines.native.sequence import SeqStatus


def forced_decode_logits(engine, prompt_ids: list[int], target_ids: list[int]) -> torch.Tensor:
    """fp32 logits [len(target_ids), vocab]: row i after ``prompt_ids + target_ids[:i]``."""
    if not target_ids:
        raise InvalidRequestError("target_ids is empty (need >= 1 token to score)")
    rid = f"forced-{next(engine._ids)}"
    sp = SamplingParams(max_tokens=len(target_ids), ignore_eos=True)
    engine.add_request(Request(rid, list(prompt_ids), sp))
    seq = engine._seqs[rid]
    was_recording, engine.record_logits = engine.record_logits, True
    try:
        while seq.status is not SeqStatus.FINISHED:
            engine.step()
            n = seq.num_output_tokens
            if n and seq.status is not SeqStatus.FINISHED:
                seq.token_ids[-1] = target_ids[n - 1]
    finally:
        engine.record_logits = was_recording
    if seq.finish_reason != "length":
        raise InvalidRequestError(f"request {rid!r} ended with {seq.finish_reason!r}")
    return torch.stack(engine.recorded_logits.pop(rid))
