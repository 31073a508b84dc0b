"""adaptive: switches between a light-load and a heavy-load policy on queue and KV signals,
with hysteresis so it does not flap.

Signals per step: waiting requests ``q`` and KV utilization ``u`` (used / total blocks).
Light -> heavy when ``q >= enter_queue`` or ``u >= enter_kv_util``; heavy -> light when
``q <= exit_queue`` and ``u <= exit_kv_util``; either switch only after ``min_dwell_steps`` in
the current mode. Defaults: fifo when light (cheapest, fair), slo_aware when heavy (protects
goodput when not everyone can be served on time).
"""

from __future__ import annotations

from sagellm.scheduler_ir.strategies.registry import STRATEGIES, make_strategy
from sagellm.scheduler_ir.types import SchedulerState, StepDecision


@STRATEGIES.register("adaptive")
class AdaptiveStrategy:
    name = "adaptive"

    def __init__(
        self,
        light: str = "fifo",
        heavy: str = "slo_aware",
        enter_queue: int = 4,
        exit_queue: int = 1,
        enter_kv_util: float = 0.9,
        exit_kv_util: float = 0.7,
        min_dwell_steps: int = 8,
    ) -> None:
        if exit_queue > enter_queue or exit_kv_util > enter_kv_util:
            raise ValueError("exit thresholds must not exceed enter thresholds (hysteresis)")
        if min_dwell_steps < 0:
            raise ValueError(f"min_dwell_steps must be >= 0, got {min_dwell_steps!r}")
        self.policies = {"light": make_strategy(light), "heavy": make_strategy(heavy)}
        self.enter_queue, self.exit_queue = enter_queue, exit_queue
        self.enter_kv_util, self.exit_kv_util = enter_kv_util, exit_kv_util
        self.min_dwell_steps = min_dwell_steps
        self.mode = "light"
        self.steps_in_mode = 0
        self.switches: list[tuple[int, str]] = []  # (step index, new mode)

    def update_mode(self, state: SchedulerState) -> str:
        q = sum(not r.running for r in state.requests)
        used = state.num_total_blocks - state.num_free_blocks
        u = used / state.num_total_blocks if state.num_total_blocks else 0.0
        self.steps_in_mode += 1
        if self.steps_in_mode >= self.min_dwell_steps:
            if self.mode == "light" and (q >= self.enter_queue or u >= self.enter_kv_util):
                self._switch("heavy", state.step_index)
            elif self.mode == "heavy" and q <= self.exit_queue and u <= self.exit_kv_util:
                self._switch("light", state.step_index)
        return self.mode

    def _switch(self, mode: str, step: int) -> None:
        self.mode = mode
        self.steps_in_mode = 0
        self.switches.append((step, mode))

    def decide(self, state: SchedulerState) -> StepDecision:
        mode = self.update_mode(state)
        d = self.policies[mode].decide(state)
        return StepDecision(d.items, d.preempt, f"adaptive:{mode}")

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:
        for p in self.policies.values():
            p.observe(num_prefill_tokens, num_decode_tokens, step_s)
