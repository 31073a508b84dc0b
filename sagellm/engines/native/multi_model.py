"""MultiModelEngine: several different checkpoints time-sharing one device's weight memory,
scheduled token-level by Aegaeon (SOSP'25, "Aegaeon: Effective GPU Pooling for Concurrent
LLM Serving on the Market").

Each model is a :class:`NativeEngine` (its own queues and paged KV cache). Its weights are
*resident* or not; ``weight_budget_bytes`` caps the resident weight bytes (by default it
holds the largest model only, so every change of model is a real switch)::

    step():
      states = {model: engine.snapshot()}             per-model read-only views
      (model, decision) = strategy.next_step(states)   AegaeonStrategy: prefill groups,
                                                       decode turns with time quotas
      if model's weights are not resident:             the switch, timed (wall seconds):
          drop the weight tensors of resident models until this one fits the budget,
          load_checkpoint(path) from disk -> DecoderModel on the device
      plan = optimizer(builder(decision, state)); engine.step(plan)   the engine's one path
      strategy.observe_step(model, prefill, decode, step_s, switch_s=load_s)
                                                       step_s includes the switch; the
                                                       strategy's c0 is the measured load

What is left out of the paper: the KV caches of all models stay resident (Aegaeon also swaps
KV between device and host with the model; here only weights move), weights are re-read from
the checkpoint on disk (the OS page cache usually holds it; the paper copies from pinned host
memory, and prefetches the next model while the current one runs, which this does not do),
and a switch frees the old model's tensors before loading (no overlap of the two).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from sagellm.core.config import EngineConfig
from sagellm.core.errors import (
    ConfigError,
    InvalidRequestError,
    ModelLoadError,
    SageLLMError,
    SchedulingStalledError,
)
from sagellm.core.types import (
    Request,
    RequestId,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
    StepMetrics,
)
from sagellm.engines.native.engine import NativeEngine
from sagellm.engines.native.model import DecoderModel
from sagellm.engines.native.weights import load_checkpoint
from sagellm.models import resolve_model_path
from sagellm.scheduler_ir import ExecutionPlan, IRGraph
from sagellm.scheduler_ir.strategies import AegaeonStrategy


class WeightsNotResidentError(SageLLMError, LookupError):
    """A model's forward ran while its weights were not loaded (a bug in the caller: the
    multi-model engine loads a model before every step of it)."""


class _NotResident:
    """Stands in for an unloaded model's :class:`DecoderModel` (its tensors are freed)."""

    num_weight_bytes = 0

    def __init__(self, name: str) -> None:
        self.name = name

    def forward(self, *args, **kwargs):
        raise WeightsNotResidentError(f"model {self.name!r}: weights are not resident")


def model_weight_bytes(model: DecoderModel) -> int:
    """Bytes of every weight tensor ``model`` holds (tied tensors counted once)."""
    tensors = [model.embed, model.norm, model.lm_head]
    for lw in model.layers:
        tensors.extend(t for t in vars(lw).values() if isinstance(t, torch.Tensor))
    seen: dict[int, int] = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


@dataclass(frozen=True)
class ModelSwitch:
    """One weight load before a step of ``to_model``."""

    step: int  # the multi-model engine's step index
    start_s: float  # engine clock when the switch began
    from_models: tuple[str, ...]  # models whose weights were dropped to make room
    to_model: str
    load_s: float  # wall seconds: drop + read checkpoint + build on the device
    weight_bytes: int  # bytes of ``to_model``'s weights now resident


class MultiModelEngine:
    """Serves several checkpoints, one :class:`NativeEngine` each, under a weight budget.

    ``models``: model name (what ``Request.model`` says) -> that model's engine config
    (checkpoint, KV blocks, batching limits). ``weight_budget_bytes``: the most weight bytes
    resident at once (None = the largest model's; less than that is a ValueError).
    Invariants after every step: resident weight bytes <= ``weight_budget_bytes``; each
    request lives in the engine of its model. Requests without a model go to the first one.
    """

    capabilities = frozenset({"continuous_batching", "streaming", "abort", "scheduler_ir"})

    def __init__(
        self,
        models: dict[str, EngineConfig],
        weight_budget_bytes: int | None = None,
        strategy: AegaeonStrategy | None = None,
    ) -> None:
        if not models:
            raise ValueError("models must name at least one model")
        tp = {m: cfg.tp_size for m, cfg in models.items() if cfg.tp_size > 1}
        if tp:  # swapping reloads one process's weights; the worker ranks would keep theirs
            raise ConfigError(f"models {tp}: tp_size must be 1 in a MultiModelEngine")
        self.clock_fn: Callable[[], float] = time.perf_counter
        self.strategy = strategy if strategy is not None else AegaeonStrategy()
        self.engines: dict[str, NativeEngine] = {}
        self.weight_bytes: dict[str, int] = {}
        self._paths = {m: resolve_model_path(cfg.model.path) for m, cfg in models.items()}
        self._resident: list[str] = []  # least recently used first
        for name, cfg in models.items():
            for other in list(self._resident):  # one model's weights at a time, even here
                self._unload(other)
            eng = NativeEngine(cfg)
            eng.instance_id = f"model-{name}"
            eng.clock_fn = self.clock
            self.engines[name] = eng
            self.weight_bytes[name] = model_weight_bytes(eng.model)
            self._resident.append(name)
        largest = max(self.weight_bytes.values())
        if weight_budget_bytes is not None and weight_budget_bytes < largest:
            raise ValueError(
                f"weight_budget_bytes={weight_budget_bytes} cannot hold the largest model "
                f"({largest} bytes; sizes: {self.weight_bytes})"
            )
        self.weight_budget_bytes = weight_budget_bytes or largest
        # the runner draws prompts from ``arch.vocab_size``: ids valid for every model
        self.arch = min((e.arch for e in self.engines.values()), key=lambda a: a.vocab_size)
        self.device = next(iter(self.engines.values())).device
        self.switches: list[ModelSwitch] = []  # every weight load since start, in order
        self.placement: dict[RequestId, str] = {}
        self._num_steps = 0
        self._empty_steps = 0
        self._gen_ids = itertools.count()
        self._to_flush: set[str] = set()  # models with aborted requests' outputs pending

    # ------------------------------------------------------------------ requests

    def clock(self) -> float:
        return self.clock_fn()

    @property
    def models(self) -> list[str]:
        return list(self.engines)

    def add_request(self, request: Request) -> None:
        """Queue ``request`` on its model's engine; InvalidRequestError for an unknown model
        (naming the known ones) or anything that engine rejects."""
        name = request.model if request.model is not None else self.models[0]
        if name not in self.engines:
            raise InvalidRequestError(
                f"request {request.request_id!r}: unknown model {name!r}; known: {self.models}"
            )
        if request.request_id in self.placement:
            raise InvalidRequestError(f"request_id {request.request_id!r} is already in use")
        self.engines[name].add_request(request)
        self.placement[request.request_id] = name

    def abort(self, request_id: RequestId) -> bool:
        name = self.placement.get(request_id)
        if name is None or not self.engines[name].abort(request_id):
            return False
        self._to_flush.add(name)
        return True

    def has_unfinished(self) -> bool:
        return any(e.has_unfinished() for e in self.engines.values())

    # ------------------------------------------------------------------ weights

    def resident_models(self) -> list[str]:
        """Models whose weights are loaded, least recently used first."""
        return list(self._resident)

    def resident_weight_bytes(self) -> int:
        return sum(self.weight_bytes[m] for m in self._resident)

    def _unload(self, name: str) -> None:
        self.engines[name].model = _NotResident(name)  # the last reference: tensors freed
        self._resident.remove(name)

    def _ensure_resident(self, name: str) -> float:
        """Load ``name``'s weights if needed (dropping least recently used models until they
        fit the budget); the wall seconds it took, 0 when they were resident."""
        if name in self._resident:
            self._resident.remove(name)
            self._resident.append(name)
            return 0.0
        start, t0 = self.clock(), time.perf_counter()
        dropped = []
        while self._resident and (
            self.resident_weight_bytes() + self.weight_bytes[name] > self.weight_budget_bytes
        ):
            dropped.append(self._resident[0])
            self._unload(self._resident[0])
        eng = self.engines[name]
        ckpt = load_checkpoint(self._paths[name], eng.dtype)
        shape = ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads")
        if any(getattr(ckpt.arch, k) != getattr(eng.arch, k) for k in shape):
            raise ModelLoadError(f"{self._paths[name]}: the checkpoint changed since start")
        eng.model = DecoderModel(ckpt.arch, ckpt.state_dict, eng.dtype, eng.device)
        del ckpt
        if eng.device.type == "cuda":
            torch.cuda.synchronize(eng.device)
        load_s = time.perf_counter() - t0
        self._resident.append(name)
        self.switches.append(
            ModelSwitch(
                self._num_steps, start, tuple(dropped), name, load_s, self.weight_bytes[name]
            )
        )
        return load_s

    # ------------------------------------------------------------------ the step

    def step(self) -> list[RequestOutput]:
        """One step of the model the strategy picks (its weights loaded first if needed);
        also returns the final outputs of requests aborted since the last step."""
        outputs = self._flush_aborted()
        states = {m: e.snapshot() for m, e in self.engines.items()}
        choice = self.strategy.next_step(states)
        if choice is None:
            return outputs
        name, decision = choice
        eng, state = self.engines[name], states[name]
        if not decision.items and not decision.preempt:
            self._watch_progress(name, state)
            return outputs
        self._empty_steps = 0
        t0 = time.perf_counter()
        load_s = self._ensure_resident(name)
        graph = eng.optimizer.optimize(eng.builder.build(decision, state))
        plan = ExecutionPlan.of(f"{eng.instance_id}-mm{self._num_steps}", graph, eng.instance_id)
        n_before = len(eng.step_metrics())
        outputs.extend(eng.step(plan))
        step_s = time.perf_counter() - t0
        new = eng.step_metrics()[n_before:]
        pre = sum(s.num_prefill_tokens for s in new)
        dec = sum(s.num_decode_tokens for s in new)
        self.strategy.observe_step(name, pre, dec, step_s, switch_s=load_s)
        self._num_steps += 1
        return outputs

    def _flush_aborted(self) -> list[RequestOutput]:
        """Aborted requests' final outputs wait in their engine: an empty plan returns them
        without touching the model's weights."""
        out: list[RequestOutput] = []
        for name in sorted(self._to_flush):
            eng = self.engines[name]
            empty = ExecutionPlan.of(f"{eng.instance_id}-flush", IRGraph(), eng.instance_id)
            out.extend(eng.step(empty))
        self._to_flush.clear()
        return out

    def _watch_progress(self, name: str, state) -> None:
        self._empty_steps += 1
        limit = self.engines[name].config.max_empty_steps
        if self._empty_steps > limit:
            raise SchedulingStalledError(
                f"strategy {self.strategy.name!r} chose model {name!r} with an empty decision "
                f"for {self._empty_steps} steps ({len(state.requests)} requests of it queued)"
            )

    # ------------------------------------------------------------------ results

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        return self.engines[self.placement[request_id]].output_token_ids(request_id)

    def request_metrics(self) -> list[RequestMetrics]:
        return [m for e in self.engines.values() for m in e.request_metrics()]

    def step_metrics(self) -> list[StepMetrics]:
        """Every model's steps, by start time (a step's ``step`` counts within its model)."""
        steps = [s for e in self.engines.values() for s in e.step_metrics()]
        return sorted(steps, key=lambda s: s.start_s)

    def reset_metrics(self) -> None:
        """Forget finished requests and past step metrics. ``switches`` is a log since start
        (a benchmark selects a run's switches by ``start_s``)."""
        for e in self.engines.values():
            e.reset_metrics()
        kept = {m.request_id for e in self.engines.values() for m in e.request_metrics()}
        self.placement = {r: m for r, m in self.placement.items() if r in kept}

    def stats(self) -> dict[str, float]:
        loads = [s.load_s for s in self.switches]
        out = {
            "num_steps": float(self._num_steps),
            "num_switches": float(len(loads)),
            "switch_s_total": float(sum(loads)),
            "mean_switch_s": float(sum(loads) / len(loads)) if loads else 0.0,
            "weight_budget_bytes": float(self.weight_budget_bytes),
            "resident_weight_bytes": float(self.resident_weight_bytes()),
        }
        for name, e in self.engines.items():
            out[f"{name}.weight_bytes"] = float(self.weight_bytes[name])
            out[f"{name}.num_steps"] = float(len(e.step_metrics()))
            out[f"{name}.num_kv_blocks_used"] = e.stats()["num_kv_blocks_used"]
        return out

    def generate(
        self,
        prompts: Seq[list[int]],
        sampling: SamplingParams | None = None,
        model: str | None = None,
    ) -> list[list[int]]:
        """Run token-id ``prompts`` on ``model`` (default: the first) to completion (and
        every other queued request with them)."""
        sp = sampling or SamplingParams()
        rids = [f"gen-{next(self._gen_ids)}" for _ in prompts]
        for rid, p in zip(rids, prompts, strict=True):
            self.add_request(Request(rid, list(p), sp, model=model))
        while self.has_unfinished():
            self.step()
        return [self.output_token_ids(r) for r in rids]

    def close(self) -> None:
        for e in self.engines.values():
            e.close()
