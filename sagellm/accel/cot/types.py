"""Data of chain-of-thought acceleration: the settings, one reasoning step, one run's result.

A *step* is a span of generated tokens ending at a step delimiter token (e.g. any token whose
text holds a newline), at EOS, or at ``max_step_tokens``. Token counts are ``num_*_tokens``;
times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sagellm.core.errors import ConfigError

VerificationResult = Literal["accepted", "corrected", "target_only"]
CoTFinishReason = Literal["stop", "length", "early_exit"]


@dataclass(frozen=True)
class CoTConfig:
    """Settings of :class:`~sagellm.accel.cot.CoTAccelController` (all counts >= 1).

    ``speculative_steps``: a drafter proposes each step and the target verifies it (lossless
    for greedy decoding). ``early_exit``: DEER-style trial answers at step boundaries stop the
    reasoning once the answer is stable (lossy: measured, never assumed)."""

    delimiter_token_ids: frozenset[int]  # a step ends after any of these tokens
    max_new_tokens: int = 256  # the reasoning budget, as a plain greedy run's max_tokens
    max_step_tokens: int = 32  # a drafted step's length cap
    speculative_steps: bool = True
    early_exit: bool = False
    trial_prompt_token_ids: tuple[int, ...] = ()  # appended to ask for the answer now
    trial_max_tokens: int = 8  # greedy tokens of one trial answer
    trial_stable_checks: int = 2  # exit when this many consecutive trial answers agree
    trial_every_steps: int = 1  # a trial check after every this many steps
    min_steps_before_exit: int = 1  # no trial check before this many reasoning steps

    def __post_init__(self) -> None:
        for name in (
            "max_new_tokens",
            "max_step_tokens",
            "trial_max_tokens",
            "trial_stable_checks",
            "trial_every_steps",
            "min_steps_before_exit",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"cot.{name} must be an integer >= 1, got {v!r}")
        if not self.delimiter_token_ids:
            raise ConfigError(
                "cot.delimiter_token_ids must name at least one token id that ends a step"
            )
        if self.early_exit and not self.trial_prompt_token_ids:
            raise ConfigError(
                "cot.trial_prompt_token_ids must be non-empty when cot.early_exit is on "
                "(the tokens that ask for the answer, e.g. the encoding of 'The answer is')"
            )
        if not (self.speculative_steps or self.early_exit):
            raise ConfigError(
                "cot: at least one of speculative_steps, early_exit must be on "
                "(with both off run the target's plain greedy generate)"
            )

    def check_vocab(self, vocab_size: int) -> None:
        """ConfigError when a configured token id is outside ``[0, vocab_size)``."""
        for name in ("delimiter_token_ids", "trial_prompt_token_ids"):
            bad = sorted(t for t in getattr(self, name) if not 0 <= t < vocab_size)
            if bad:
                raise ConfigError(
                    f"cot.{name}: token ids {bad[:5]} outside the target's vocabulary "
                    f"[0, {vocab_size})"
                )


@dataclass(frozen=True)
class CoTStep:
    """One reasoning step. Its tokens are ``draft_tokens[:num_accepted_tokens] + corrections``.

    ``verification_result``: "accepted" (the target's greedy continuation equals the whole
    draft; no corrections), "corrected" (the target rejected the draft at token
    ``num_accepted_tokens``; ``corrections`` is the target's own rest of the step) or
    "target_only" (no drafter: the target wrote the step, all in ``corrections``)."""

    draft_tokens: tuple[int, ...]
    verification_result: VerificationResult
    corrections: tuple[int, ...]
    num_accepted_tokens: int = 0  # leading draft tokens the target agreed with
    num_target_forwards: int = 0  # verification forwards + the target's own decode steps

    @property
    def token_ids(self) -> tuple[int, ...]:
        return self.draft_tokens[: self.num_accepted_tokens] + self.corrections


@dataclass(frozen=True)
class TrialAnswer:
    """One DEER check: the trial answer's tokens after the reasoning so far."""

    after_tokens: int  # reasoning tokens generated when the check ran
    token_ids: tuple[int, ...]  # the answer (up to its first delimiter / EOS, excluded)


@dataclass(frozen=True)
class CoTResult:
    """One accelerated run. ``output_token_ids`` = reasoning tokens, then (early exit only)
    the trial prompt and the stable trial answer."""

    output_token_ids: tuple[int, ...]
    num_reasoning_tokens: int
    steps: tuple[CoTStep, ...]
    finish_reason: CoTFinishReason
    elapsed_s: float
    trials: tuple[TrialAnswer, ...] = field(default=())

    @property
    def num_drafted_steps(self) -> int:
        return sum(s.verification_result != "target_only" for s in self.steps)

    @property
    def num_accepted_steps(self) -> int:
        return sum(s.verification_result == "accepted" for s in self.steps)

    @property
    def num_corrected_steps(self) -> int:
        return sum(s.verification_result == "corrected" for s in self.steps)

    @property
    def num_draft_tokens(self) -> int:
        return sum(len(s.draft_tokens) for s in self.steps)

    @property
    def num_accepted_draft_tokens(self) -> int:
        return sum(s.num_accepted_tokens for s in self.steps)
