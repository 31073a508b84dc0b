"""aegaeon: token-level multi-model scheduling (Aegaeon, SOSP'25: "Aegaeon: Effective GPU
Pooling for Concurrent LLM Serving on the Market").

Several models share one device; the scheduler decides, step by step, which model runs:

- prefill is grouped per model: at a turn boundary, the model whose waiting request is oldest
  prefills up to ``prefill_group_size`` of its waiting requests (FCFS) in one step; at most one
  prefill group runs between two decode turns, so decodes are never starved;
- decode runs in rounds over the models with running requests; model ``i`` keeps the device
  for a time quota ``q_i`` (at least one step), then the next model gets its turn.

Quotas (the paper's formula)::

    n_i   = TPOT_SLO / d_i                    d_i: measured decode step time of model i
    S     = sum_k 1 / n_k
    alpha = max(c0 / (min_k n_k * 4 s) + S, 0.5)
    q_i   = c0 / (n_i * (alpha - S))          c0: the round's model-switch time, measured

``c0`` is measured as (number of models in the round) x the EMA of the per-switch overhead:
the switch seconds an engine reports (``MultiModelEngine`` times its weight loads), else the
extra time of the first step after a switch over that model's EMA decode step time
(floored at ``min_switch_s`` so quotas stay positive). ``alpha - S >= c0 / (min n * 4 s) > 0``.
"""

from __future__ import annotations

from dataclasses import replace

from sagellm.scheduler_ir.strategies.base import fill_budget
from sagellm.scheduler_ir.strategies.registry import STRATEGIES
from sagellm.scheduler_ir.types import SchedulerState, StepDecision

QUOTA_HORIZON_S = 4.0  # the "4 s" of alpha's first term
DEFAULT_TPOT_SLO_S = 0.1  # used when neither the strategy nor any request sets one


def aegaeon_quotas(
    tpot_slo_s: float, decode_step_s: dict[str, float], c0_s: float
) -> dict[str, float]:
    """Per-model decode time quotas in seconds (see the module docstring)."""
    if tpot_slo_s <= 0:
        raise ValueError(f"tpot_slo_s must be > 0, got {tpot_slo_s!r}")
    if c0_s < 0:
        raise ValueError(f"c0_s must be >= 0, got {c0_s!r}")
    bad = {m: d for m, d in decode_step_s.items() if d <= 0}
    if bad:
        raise ValueError(f"decode_step_s must be > 0 for every model, got {bad}")
    if not decode_step_s:
        return {}
    n = {m: tpot_slo_s / d for m, d in decode_step_s.items()}
    s = sum(1.0 / v for v in n.values())
    alpha = max(c0_s / (min(n.values()) * QUOTA_HORIZON_S) + s, 0.5)
    return {m: c0_s / (v * (alpha - s)) for m, v in n.items()}


class AegaeonStrategy:
    """Chooses ``(model, decision)`` per step over per-model instance states."""

    name = "aegaeon"

    def __init__(
        self,
        tpot_slo_s: float | None = None,
        prefill_group_size: int = 8,
        min_switch_s: float = 1e-3,
        default_decode_step_s: float = 0.02,
        ema: float = 0.2,
    ) -> None:
        if tpot_slo_s is not None and tpot_slo_s <= 0:
            raise ValueError(f"tpot_slo_s must be None or > 0, got {tpot_slo_s!r}")
        if prefill_group_size < 1:
            raise ValueError(f"prefill_group_size must be >= 1, got {prefill_group_size!r}")
        self.tpot_slo_s = tpot_slo_s
        self.prefill_group_size = prefill_group_size
        self.min_switch_s = min_switch_s
        self.default_decode_step_s = default_decode_step_s
        self.ema = ema
        self.decode_step_s: dict[str, float] = {}
        self.switch_s = min_switch_s
        self.quotas: dict[str, float] = {}
        self.round: list[str] = []
        self.current: str | None = None
        self.turn_s = 0.0
        self.prefilled_since_turn = False
        self.last_model: str | None = None
        self.num_rounds = 0
        self._chosen: str | None = None

    def c0_s(self, num_models: int) -> float:
        return max(self.switch_s, self.min_switch_s) * max(num_models, 1)

    def next_step(self, states: dict[str, SchedulerState]) -> tuple[str, StepDecision] | None:
        """The model to run next and its decision; None when no model has work."""
        cur = self.current
        in_quota = cur in states and self.turn_s < self.quotas.get(cur, 0.0)
        if in_quota and any(r.running for r in states[cur].requests):
            return cur, self._decode(states[cur])
        if not self.prefilled_since_turn:
            waiting = [
                (r.arrival_s, m) for m, st in states.items() for r in st.requests if not r.running
            ]
            if waiting:
                m = min(waiting)[1]
                d = self._prefill(states[m])
                if d.items:
                    self.prefilled_since_turn = True
                    self.current = None
                    return m, d
        return self._next_turn(states)

    def _next_turn(self, states: dict[str, SchedulerState]) -> tuple[str, StepDecision] | None:
        busy = [m for m, st in states.items() if any(r.running for r in st.requests)]
        self.round = [m for m in self.round if m in busy]
        if not self.round:
            if not busy:
                self.current = None
                self.prefilled_since_turn = False
                waiting = [m for m, st in states.items() if st.requests]
                return (waiting[0], self._prefill(states[waiting[0]])) if waiting else None
            self.round = sorted(busy)
            d = {m: self.decode_step_s.get(m, self.default_decode_step_s) for m in self.round}
            self.quotas = aegaeon_quotas(self._tpot(states), d, self.c0_s(len(self.round)))
            self.num_rounds += 1
        self.current = self.round.pop(0)
        self.turn_s = 0.0
        self.prefilled_since_turn = False
        return self.current, self._decode(states[self.current])

    def _tpot(self, states: dict[str, SchedulerState]) -> float:
        """The configured TPOT objective, else the tightest one among the requests, else 0.1 s."""
        if self.tpot_slo_s is not None:
            return self.tpot_slo_s
        slos = [r.tpot_slo_s for st in states.values() for r in st.requests if r.tpot_slo_s]
        return min(slos) if slos else DEFAULT_TPOT_SLO_S

    def _prefill(self, st: SchedulerState) -> StepDecision:
        waiting = sorted((r for r in st.requests if not r.running), key=lambda r: r.arrival_s)
        group = waiting[: self.prefill_group_size]
        return fill_budget(st, group, lambda v, r: False, "aegaeon:prefill")

    def _decode(self, st: SchedulerState) -> StepDecision:
        running = sorted((r for r in st.requests if r.running), key=lambda r: r.arrival_s)
        return fill_budget(st, running, lambda v, r: r.running, "aegaeon:decode")

    def observe_step(
        self,
        model: str,
        num_prefill: int,
        num_decode: int,
        step_s: float,
        switch_s: float | None = None,
    ) -> None:
        """Feed back one executed step of ``model`` (seconds of wall time, switch included).

        ``switch_s``: the part of ``step_s`` spent switching to ``model``, when the engine
        measures it (a multi-model engine timing its weight load; 0 for a step without a
        load). None: inferred as a decode step after a model change minus the model's EMA
        decode step time, which cannot see a switch cost when every decode turn is one step
        (the decode EMA then absorbs it)."""
        a = self.ema
        changed = self.last_model is not None and model != self.last_model
        if switch_s is not None and (switch_s > 0 or changed):
            self.switch_s += a * (switch_s - self.switch_s)
        if num_prefill == 0 and num_decode > 0:
            d = self.decode_step_s.get(model)
            if switch_s is not None:
                step_s_model = step_s - switch_s
            else:
                step_s_model = step_s
                if model != self.last_model and d is not None:
                    over = max(0.0, step_s - d)
                    self.switch_s += a * (over - self.switch_s)
            self.decode_step_s[model] = step_s_model if d is None else d + a * (step_s_model - d)
        if model == self.current:
            self.turn_s += step_s
        self.last_model = model

    # -------------------------------------------------- the single-instance Strategy protocol

    def decide(self, state: SchedulerState) -> StepDecision:
        """One instance whose requests may name different models (``RequestView.model``):
        the models share the instance's budget, one model per step; seats held by the other
        models' running requests are not available to a model's sub-state."""
        split: dict[str, list] = {}
        for r in state.requests:
            split.setdefault(r.model or "default", []).append(r)
        running = sum(r.running for r in state.requests)
        states = {
            m: replace(
                state,
                requests=tuple(rs),
                max_num_seqs=state.max_num_seqs - running + sum(r.running for r in rs),
            )
            for m, rs in split.items()
        }
        choice = self.next_step(states)
        if choice is None:
            return StepDecision(note="aegaeon:idle")
        self._chosen = choice[0]
        return choice[1]

    def observe(self, num_prefill_tokens: int, num_decode_tokens: int, step_s: float) -> None:
        model = self._chosen
        if model is not None:
            self.observe_step(model, num_prefill_tokens, num_decode_tokens, step_s)


STRATEGIES.register("aegaeon")(AegaeonStrategy)
