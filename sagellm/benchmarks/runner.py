"""BenchmarkRunner: drives any BaseEngine in-process and writes a run folder.

In ``arrival`` mode requests are submitted when their arrival time comes while the engine
keeps stepping (a request's ``arrival_s`` is its scheduled time, as in vLLM's bench serve, so
queueing delay counts in its TTFT). When the engine is idle and the next arrival is in the
future the runner waits for it in real time. In ``concurrency`` mode a new request is submitted
whenever fewer than ``max_concurrency`` are in flight. A request the engine refuses at
``add_request`` (``InvalidRequestError``) is recorded with finish reason ``"rejected"``: it
counts in ``num_requests`` and ``num_rejected_requests`` and never as good (see
:mod:`sagellm.benchmarks.metrics`); the run goes on.

Workload token ids are drawn below the engine's vocabulary size (:func:`engine_vocab_size`).

:meth:`BenchmarkRunner.iter_run` is the same run as a generator that yields after every engine
step, so a caller can interleave two runs step by step (the gate's lockstep A/B comparison,
:mod:`sagellm.benchmarks.lockstep`). Timestamps come from ``engine.clock()``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.device import calibration_s, measure_peak_flops
from sagellm.benchmarks.metrics import SLOTargets, compute_metrics
from sagellm.benchmarks.progress import RunProgress
from sagellm.benchmarks.workloads import WorkloadConfig, WorkloadRequest, build_workload
from sagellm.core.errors import InvalidRequestError
from sagellm.core.protocol import BaseEngine
from sagellm.core.types import SLO, Request, RequestMetrics, SamplingParams, StepMetrics

WARMUP_SEED = 1_000_003  # seed offset of the warm-up draw


@dataclass
class RepeatResult:
    requests: list[RequestMetrics]
    steps: list[StepMetrics]
    metrics: dict[str, float | None]
    calibration_s: float | None  # None when measured by a client (no local device runs it)


@dataclass
class RunResult:
    config: BenchmarkConfig
    repeats: list[RepeatResult] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)  # median over repeats
    run_dir: Path | None = None
    env: dict[str, object] = field(default_factory=dict)  # extra env.json entries (backend)


def median_metrics(ms: list[dict[str, float | None]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in ms[0]:
        vals = [m[k] for m in ms if m.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def drain(gen: Generator[None, None, RunResult]) -> RunResult:
    """Advance a generator from :meth:`BenchmarkRunner.iter_run` to its end; its result."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def engine_vocab_size(engine: object) -> int:
    """The vocabulary size of ``engine``: its model's ``arch.vocab_size`` (the native engine),
    else its tokenizer's ``vocab_size`` (HF tokenizers), else its own ``vocab_size`` (engines in
    another process, e.g. vllm); ValueError when it exposes none."""
    n = getattr(getattr(engine, "arch", None), "vocab_size", None)
    if n is None:
        n = getattr(getattr(engine, "tokenizer", None), "vocab_size", None)
    if n is None:
        n = getattr(engine, "vocab_size", None)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(
            f"cannot tell the vocabulary size of {type(engine).__name__}: it has neither "
            "arch.vocab_size nor tokenizer.vocab_size; pass BenchmarkRunner(engine, vocab_size=...)"
        )
    return n


WorkloadBuilder = Callable[[WorkloadConfig, int], list[WorkloadRequest]]


class BenchmarkRunner:
    """``BenchmarkRunner(engine).run(config)``; without an engine, one is created from
    ``config.engine``. Results go to ``results_root/<experiment>/<run_id>/`` unless
    ``results_root`` is None. ``vocab_size`` (token ids of the drawn workloads are below it)
    defaults to :func:`engine_vocab_size` of the engine. ``build`` turns (workload config with
    the draw's seed, vocab size) into requests, :func:`build_workload` by default; an
    experiment passes its own to shape prompts beyond what ``WorkloadConfig`` describes (it
    then records that shape in its own run folder)."""

    def __init__(
        self,
        engine: BaseEngine | None = None,
        progress: bool | None = None,
        vocab_size: int | None = None,
        build: WorkloadBuilder = build_workload,
    ) -> None:
        if vocab_size is not None and (not isinstance(vocab_size, int) or vocab_size < 1):
            raise ValueError(f"vocab_size must be None or an integer >= 1, got {vocab_size!r}")
        self.engine = engine
        self.progress = progress
        self.vocab_size = vocab_size
        self.build = build

    def run(
        self,
        config: BenchmarkConfig,
        results_root: str | Path | None = "results",
        peak_flops_per_s: float | None = None,
    ) -> RunResult:
        """Run ``config`` to the end; see :meth:`iter_run`."""
        result = drain(self.iter_run(config, peak_flops_per_s))
        if results_root is not None:
            from sagellm.benchmarks.run_dir import write_run

            result.run_dir = write_run(result, Path(results_root))
        return result

    def iter_run(
        self, config: BenchmarkConfig, peak_flops_per_s: float | None = None
    ) -> Generator[None, None, RunResult]:
        """The run as a generator: yields after each engine step, returns the RunResult.

        ``peak_flops_per_s`` (for MFU) is measured here unless given (a caller comparing two
        runs passes one value to both)."""
        from sagellm.engines import create_engine

        engine = self.engine or create_engine(config.engine)
        vocab = self.vocab_size or engine_vocab_size(engine)
        dev, dtype = str(getattr(engine, "device", "cpu")), config.engine.model.dtype
        peak = peak_flops_per_s or measure_peak_flops(dev, dtype)
        if config.warmup_requests:
            # drawn with another seed: warming up must not pre-fill a repeat's prefix cache
            wl = config.workload.model_copy(update={"seed": config.workload.seed + WARMUP_SEED})
            warm = [
                WorkloadRequest(f"warmup-{i}", 0.0, r.prompt_token_ids, min(r.max_tokens, 4))
                for i, r in enumerate(self.build(wl, vocab)[: config.warmup_requests])
            ]
            yield from self._drive(engine, warm, config, "warmup", None)
        result = RunResult(config)
        slo = SLOTargets(config.slo.ttft_s, config.slo.tpot_s)
        bar = RunProgress(config.experiment, config.repeats, self.progress)
        try:
            for rep in range(config.repeats):
                yield from self._repeat(engine, config, rep, vocab, peak, slo, result, bar)
        finally:
            bar.close()
        engine.reset_metrics()
        result.metrics = median_metrics([r.metrics for r in result.repeats])
        return result

    def _repeat(self, engine, config: BenchmarkConfig, rep: int, vocab, peak, slo, result, bar):
        """One measured repeat, appended to ``result``."""
        dev, dtype = str(getattr(engine, "device", "cpu")), config.engine.model.dtype
        # repeat r replays the workload drawn with seed + r: identical across runs, and a
        # repeat never hits prefixes cached by an earlier one
        wl = config.workload.model_copy(update={"seed": config.workload.seed + rep})
        reqs = self.build(wl, vocab)
        calib = calibration_s(dev, dtype)
        engine.reset_metrics()
        bar.start_repeat(rep, len(reqs))
        rmetrics, steps = yield from self._drive(engine, reqs, config, f"r{rep}", bar)
        m = compute_metrics(
            rmetrics,
            steps,
            slo,
            peak,
            config.num_devices,
            config.price_per_device_hour,
        )
        m["calibration_s"] = calib
        for k in ("mean_ttft_s", "p50_ttft_s", "p95_ttft_s", "p50_tpot_s", "p95_tpot_s"):
            if m.get(k) is not None:
                m[f"{k}_norm"] = m[k] / calib
        if m.get("cost_device_s_per_token") is not None:
            m["cost_device_s_per_token_norm"] = m["cost_device_s_per_token"] / calib
        result.repeats.append(RepeatResult(rmetrics, steps, m, calib))

    def _drive(self, engine, reqs: list[WorkloadRequest], cfg: BenchmarkConfig, tag: str, bar):
        """Serve ``reqs``; ``bar`` (a RunProgress, None for the warm-up) counts finished ones."""
        order = sorted(range(len(reqs)), key=lambda i: reqs[i].arrival_offset_s)
        ids = [f"{tag}-{reqs[i].request_id}" for i in order]
        slo = SLO(cfg.slo.ttft_s, cfg.slo.tpot_s)
        in_flight: set[str] = set()
        rejected: list[RequestMetrics] = []
        nxt = 0
        t0 = engine.clock() if hasattr(engine, "clock") else time.perf_counter()
        while nxt < len(order) or in_flight:
            now = engine.clock()
            while nxt < len(order):
                r = reqs[order[nxt]]
                if cfg.mode == "concurrency":
                    if len(in_flight) >= cfg.max_concurrency:
                        break
                    arrival = now
                else:
                    arrival = t0 + r.arrival_offset_s
                    if arrival > now:
                        break
                sp = SamplingParams(max_tokens=r.max_tokens, ignore_eos=True)
                req = Request(
                    ids[nxt],
                    r.prompt_token_ids,
                    sp,
                    r.tenant_id,
                    priority=cfg.tenant_priority.get(r.tenant_id, 0),
                    slo=slo,
                    arrival_s=arrival,
                    model=cfg.tenant_model.get(r.tenant_id),
                )
                try:
                    engine.add_request(req)
                    in_flight.add(req.request_id)
                except InvalidRequestError as err:  # refused at admission: counted, run goes on
                    rejected.append(rejected_metrics(req, engine.clock()))
                    (bar.write if bar is not None else print)(f"{req.request_id} rejected: {err}")
                    if bar is not None:
                        bar.request_done()
                nxt += 1
            if not in_flight:
                # idle until the next scheduled arrival: a real wait, as a load generator does
                time.sleep(max(0.0, t0 + reqs[order[nxt]].arrival_offset_s - engine.clock()))
                continue
            for out in engine.step():
                if out.finished:
                    in_flight.discard(out.request_id)
                    if bar is not None:
                        bar.request_done()
            yield
        mine = set(ids)
        served = [m for m in engine.request_metrics() if m.request_id in mine]
        return served + rejected, list(engine.step_metrics())


def rejected_metrics(request: Request, now_s: float) -> RequestMetrics:
    """The record of a request refused at ``add_request``: finish reason ``"rejected"`` at
    ``now_s`` (engine clock), no tokens."""
    arrival = request.arrival_s if request.arrival_s is not None else now_s
    return RequestMetrics(
        request.request_id,
        arrival,
        len(request.prompt_token_ids),
        finished_s=now_s,
        finish_reason="rejected",
    )
