"""CoTAccelController: chain-of-thought generation with speculative reasoning steps and early
exit (see ``steps`` and ``early_exit``).

``accelerate_cot(prompt)`` generates step by step. With ``speculative_steps`` a drafter
proposes each step and the target verifies it in one forward (lossless: with early exit off
the output equals the target's plain greedy run, ``max_tokens = max_new_tokens``). With
``early_exit`` a trial answer is asked at step boundaries and the reasoning stops when it is
stable; the output then ends with the trial prompt and that answer (lossy, measured).
"""

from __future__ import annotations

import time

from sagellm.accel.cot.early_exit import AnswerKey, TrialAnswerMonitor
from sagellm.accel.cot.protocol import DraftEngine, TargetEngine
from sagellm.accel.cot.steps import StepOutcome, speculative_step, target_step
from sagellm.accel.cot.types import CoTConfig, CoTFinishReason, CoTResult, CoTStep
from sagellm.core.errors import ConfigError, InvalidRequestError


class CoTAccelController:
    """Accelerates one chain-of-thought generation at a time on ``target`` (any engine with
    ``generate``, ``prompt_logits``, ``eos_token_ids`` and ``vocab_size``, e.g. a
    ``NativeEngine``), with ``drafter`` (any engine with ``generate`` and the same
    ``vocab_size``: a quantized or layer-truncated copy of the target) proposing steps."""

    def __init__(
        self,
        target: TargetEngine,
        config: CoTConfig,
        drafter: DraftEngine | None = None,
        answer_key: AnswerKey | None = None,
    ) -> None:
        if config.speculative_steps and drafter is None:
            raise ConfigError("cot.drafter: speculative_steps needs a drafter engine, got None")
        if drafter is not None and drafter.vocab_size != target.vocab_size:
            raise ConfigError(
                f"cot.drafter: the drafter's vocab_size {drafter.vocab_size} differs from the "
                f"target's {target.vocab_size}; a drafter must share the target's tokenizer "
                "(allowed: a drafter with vocab_size == the target's)"
            )
        config.check_vocab(target.vocab_size)
        self.target, self.drafter, self.config = target, drafter, config
        self.answer_key = answer_key

    def accelerate_cot(self, prompt_token_ids: list[int]) -> CoTResult:
        """Generate a reasoning chain (and, with early exit, an answer) after the prompt."""
        if not prompt_token_ids:
            raise InvalidRequestError("prompt_token_ids is empty (need >= 1 token)")
        cfg, t0 = self.config, time.perf_counter()
        prompt = list(prompt_token_ids)
        monitor = TrialAnswerMonitor(cfg, self.answer_key) if cfg.early_exit else None
        out: list[int] = []
        steps: list[CoTStep] = []
        next_token: int | None = None
        reason: CoTFinishReason = "length"
        answer: list[int] = []
        while len(out) < cfg.max_new_tokens:
            budget = min(cfg.max_step_tokens, cfg.max_new_tokens - len(out))
            outcome = self._step(prompt + out, next_token, budget)
            tokens = list(outcome.step.token_ids)
            out += tokens
            steps.append(outcome.step)
            next_token = outcome.next_token
            if any(t in self.target.eos_token_ids for t in tokens):
                reason = "stop"
                break
            boundary = tokens[-1] in cfg.delimiter_token_ids
            if monitor is not None and boundary and monitor.due(len(steps)):
                trial = monitor.check(self.target, prompt + out, len(out))
                if monitor.stable():
                    reason = "early_exit"
                    answer = [*cfg.trial_prompt_token_ids, *trial.token_ids]
                    break
        return CoTResult(
            output_token_ids=tuple(out + answer),
            num_reasoning_tokens=len(out),
            steps=tuple(steps),
            finish_reason=reason,
            elapsed_s=time.perf_counter() - t0,
            trials=tuple(monitor.trials) if monitor is not None else (),
        )

    def _step(self, context: list[int], next_token: int | None, budget: int) -> StepOutcome:
        delims = self.config.delimiter_token_ids
        if self.drafter is not None and self.config.speculative_steps:
            return speculative_step(self.target, self.drafter, context, next_token, budget, delims)
        return target_step(self.target, context, budget, delims)
