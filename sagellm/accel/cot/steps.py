"""How one reasoning step is made: drafted, verified and corrected (speculative), or written
by the target alone.

Speculative step over context ``x`` (``L`` tokens), draft ``d_1..d_k`` from the drafter::

    target.prompt_logits(x + d, from_tokens=L - 1)    one batched forward over d (teacher
        -> g_0..g_k, g_i = target's greedy token at position L + i      forcing; the prefix
    accept d_1..d_a, a = longest prefix with d_i == g_{i-1}             cache supplies x)
    a == k: the step is accepted; g_k (the token after it) is known for the next step
    a <  k: correction = g_a, then the target's own greedy tokens to the step's end

Invariant (lossless for greedy decoding): the step's tokens are exactly the target's greedy
continuation of ``x`` (up to floating-point ties between a batched and a one-token forward),
cut at the first EOS, the first delimiter of the corrections, or the token budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from sagellm.accel.cot.protocol import DraftEngine, TargetEngine
from sagellm.accel.cot.types import CoTStep
from sagellm.core.types import SamplingParams


@dataclass(frozen=True)
class StepOutcome:
    step: CoTStep
    next_token: int | None  # the target's greedy token after the step, when already computed


def greedy_step_params(max_tokens: int, delimiters: frozenset[int]) -> SamplingParams:
    """Greedy decoding that stops after a delimiter (or EOS, or ``max_tokens``)."""
    return SamplingParams(max_tokens=max_tokens, stop_token_ids=tuple(sorted(delimiters)))


def _cut_at_eos(tokens: list[int], eos: frozenset[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1]
    return tokens


def target_step(
    target: TargetEngine, context: list[int], max_tokens: int, delimiters: frozenset[int]
) -> StepOutcome:
    """The target writes the step itself (greedy, to a delimiter / EOS / ``max_tokens``)."""
    tokens = target.generate([context], greedy_step_params(max_tokens, delimiters))[0]
    step = CoTStep((), "target_only", tuple(tokens), 0, len(tokens))
    return StepOutcome(step, None)


def speculative_step(
    target: TargetEngine,
    drafter: DraftEngine,
    context: list[int],
    next_token: int | None,
    max_tokens: int,
    delimiters: frozenset[int],
) -> StepOutcome:
    """Draft a step, verify it with one target forward, correct it when rejected.
    ``next_token``: the target's greedy token after ``context`` when known (a draft whose
    first token differs is rejected without a forward)."""
    draft = drafter.generate([context], greedy_step_params(max_tokens, delimiters))[0]
    draft = draft[:max_tokens]
    forwards = 0
    if next_token is not None and draft[0] != next_token:
        greedy, accepted = [next_token], 0
    else:
        logits = target.prompt_logits(context + draft, len(context) - 1)
        forwards = 1
        greedy = logits.argmax(dim=-1).tolist()  # k + 1 tokens
        accepted = 0
        while accepted < len(draft) and draft[accepted] == greedy[accepted]:
            accepted += 1
    eos = target.eos_token_ids
    cut = _cut_at_eos(draft[:accepted], eos)
    if len(cut) < accepted or accepted == len(draft):
        # the whole draft agreed, or the target stopped (EOS) inside the agreed part
        step = CoTStep(tuple(draft), "accepted", (), len(cut), forwards)
        bonus = greedy[accepted] if accepted == len(draft) and len(greedy) > accepted else None
        return StepOutcome(step, bonus if len(cut) == accepted else None)
    corrections = [greedy[accepted]]
    room = max_tokens - accepted - 1
    fix = corrections[0]
    if room > 0 and fix not in delimiters and fix not in eos:
        more = target.generate(
            [context + draft[:accepted] + corrections], greedy_step_params(room, delimiters)
        )[0]
        corrections += more
        forwards += len(more)
    step = CoTStep(tuple(draft), "corrected", tuple(corrections), accepted, forwards)
    return StepOutcome(step, None)
