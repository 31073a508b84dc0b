"""An online model of step time, used to predict a request's service time.

``step_s ~= decode_step_s`` for a pure decode step and ``prefill_token_s`` per token of a step
that prefills; both are exponential moving averages of measured steps (weight ``ema``).
"""

from __future__ import annotations


class ServiceTimeModel:
    """Predicts seconds to prefill ``n`` tokens or to produce one decode token."""

    def __init__(
        self, prefill_token_s: float = 1e-3, decode_step_s: float = 0.02, ema: float = 0.2
    ) -> None:
        if prefill_token_s <= 0 or decode_step_s <= 0:
            raise ValueError("prefill_token_s and decode_step_s must be > 0")
        if not 0 < ema <= 1:
            raise ValueError(f"ema must be in (0, 1], got {ema!r}")
        self.prefill_token_s = prefill_token_s
        self.decode_step_s = decode_step_s
        self.ema = ema

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:
        if step_s <= 0:
            return
        a = self.ema
        if num_prefill_tokens > 0:
            per = step_s / (num_prefill_tokens + num_decode_tokens)
            self.prefill_token_s += a * (per - self.prefill_token_s)
        elif num_decode_tokens > 0:
            self.decode_step_s += a * (step_s - self.decode_step_s)

    def prefill_s(self, num_tokens: int) -> float:
        return max(num_tokens * self.prefill_token_s, self.decode_step_s)
