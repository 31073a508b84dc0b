"""``run_speculative_decode``: one request decoded speculatively, outside any engine (the body of
the plan's ``AccelController.run_speculative_decode``).

The target is a :class:`CausalLM` with its own KV (an engine's ``PagedLM`` over the target
model); each round drafts up to ``num_draft_tokens`` with ``drafter``, runs the target once
over the pending token plus the drafts (logits at every position), verifies, and truncates the
target's KV to the verified tokens. Greedy output equals plain greedy decoding of the target;
sampled output follows the target's distribution (see ``verifier``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from sagellm.accel.speculative.protocol import CausalLM, DraftModel
from sagellm.accel.speculative.stats import SpecDecodeStats
from sagellm.accel.speculative.types import Draft, DraftRequest
from sagellm.accel.speculative.verifier import Verifier
from sagellm.core.errors import InvalidRequestError
from sagellm.core.types import SamplingParams


@dataclass(frozen=True)
class SpecDecodeResult:
    token_ids: list[int]  # generated tokens (the prompt excluded)
    finish_reason: str  # "stop" (EOS or a stop token) or "length"
    stats: SpecDecodeStats
    num_target_forwards: int  # prefill included


def run_speculative_decode(
    target: CausalLM,
    drafter: DraftModel,
    prompt_token_ids: Sequence[int],
    num_draft_tokens: int,
    sampling: SamplingParams | None = None,
    eos_token_ids: Collection[int] = (),
    verifier: Verifier | None = None,
    request_id: str = "spec-0",
) -> SpecDecodeResult:
    """Decode ``prompt_token_ids`` to ``sampling.max_tokens`` tokens (or a stop) drafting up to
    ``num_draft_tokens`` per target forward; the target's and drafter's state for
    ``request_id`` is released at the end."""
    sp = sampling or SamplingParams()
    try:
        sp.validate()
    except ValueError as err:
        raise InvalidRequestError(str(err)) from None
    if num_draft_tokens < 1:
        raise InvalidRequestError(f"num_draft_tokens must be >= 1, got {num_draft_tokens!r}")
    if not prompt_token_ids:
        raise InvalidRequestError("prompt is empty (need >= 1 token)")
    verifier = verifier or Verifier()
    gen = None if sp.greedy else torch.Generator().manual_seed(sp.seed or 0)
    stops = set(sp.stop_token_ids) | (set() if sp.ignore_eos else set(eos_token_ids))
    stats = SpecDecodeStats()
    context = list(prompt_token_ids)
    out: list[int] = []
    try:
        (logits,) = target.extend([(request_id, context)])
        forwards = 1
        if logits is None:
            raise InvalidRequestError(f"the target's KV cache cannot hold {len(context)} tokens")
        new = verifier.verify(logits, Draft([]), sp, gen).token_ids
        while True:
            for tok in new:
                out.append(tok)
                context.append(tok)
                if tok in stops:
                    return SpecDecodeResult(out, "stop", stats, forwards)
                if len(out) >= sp.max_tokens:
                    return SpecDecodeResult(out, "length", stats, forwards)
            k = min(num_draft_tokens, sp.max_tokens - len(out) - 1)
            draft = Draft([])
            if k > 0:
                draft = drafter.generate_draft([DraftRequest(request_id, context, k, sp, gen)])[0]
            base = len(context) - 1  # the pending token's position
            (logits,) = target.extend(
                [(request_id, [context[-1], *draft.token_ids])], all_positions=True
            )
            forwards += 1
            if logits is None:
                raise InvalidRequestError("the target's KV cache is full")
            res = verifier.verify(logits, draft, sp, gen)
            stats.record(len(draft), res.num_accepted)
            target.truncate(request_id, base + 1 + res.num_accepted)
            new = res.token_ids
    finally:
        target.release(request_id)
        drafter.release(request_id)
