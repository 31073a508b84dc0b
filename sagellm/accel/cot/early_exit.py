"""Early exit of the reasoning span once the answer is stable (DEER-style trial answers).

Yang et al., "Dynamic Early Exit in Reasoning Models" (DEER, 2025): at a reasoning step
boundary, append a trial-answer prompt (e.g. "The answer is"), let the model answer
greedily, and stop reasoning when that answer is good enough. DEER judges the trial answer by
its confidence; this monitor judges it by stability: reasoning stops once
``trial_stable_checks`` consecutive trial answers have the same key (the answer's token ids,
or what ``answer_key`` maps them to, e.g. the number in their text; a ``None`` key never
counts). Each trial prompt extends the reasoning so far, so the target's prefix cache supplies
the shared prefix and a check computes only the partial last block, the trial prompt and the
answer tokens.

Lossy: the answer may differ from the one the full reasoning reaches; experiments measure it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from sagellm.accel.cot.protocol import TargetEngine
from sagellm.accel.cot.steps import greedy_step_params
from sagellm.accel.cot.types import CoTConfig, TrialAnswer

AnswerKey = Callable[[tuple[int, ...]], Hashable | None]


class TrialAnswerMonitor:
    """Runs trial answers at step boundaries and says when they are stable."""

    def __init__(self, config: CoTConfig, answer_key: AnswerKey | None = None) -> None:
        self.config = config
        self.answer_key: AnswerKey = answer_key or (lambda ids: ids)
        self.trials: list[TrialAnswer] = []
        self._keys: list[Hashable | None] = []

    def due(self, num_steps: int) -> bool:
        """A check is due after ``num_steps`` reasoning steps (at a step boundary)."""
        cfg = self.config
        return num_steps >= cfg.min_steps_before_exit and num_steps % cfg.trial_every_steps == 0

    def check(self, target: TargetEngine, context: list[int], num_reasoning_tokens: int):
        """Ask the target for the answer after ``context``; returns the :class:`TrialAnswer`."""
        cfg = self.config
        prompt = context + list(cfg.trial_prompt_token_ids)
        stops = cfg.delimiter_token_ids | target.eos_token_ids
        tokens = target.generate([prompt], greedy_step_params(cfg.trial_max_tokens, stops))[0]
        if tokens and tokens[-1] in stops:
            tokens = tokens[:-1]
        trial = TrialAnswer(num_reasoning_tokens, tuple(tokens))
        self.trials.append(trial)
        self._keys.append(self.answer_key(trial.token_ids))
        return trial

    def stable(self) -> bool:
        """The last ``trial_stable_checks`` answers share one non-None key."""
        k = self.config.trial_stable_checks
        last = self._keys[-k:]
        return len(last) == k and last[0] is not None and all(x == last[0] for x in last)
