"""Two benchmark runs interleaved step by step: the gate's "reference measured in the same run".

On a shared CPU the speed of the machine drifts by tens of percent within seconds (measured on
the 2-core CI box: the ci preset's p50 TPOT ranged 0.067-0.118 s across back-to-back repeats).
Two runs compared one after the other see different machines. Here side A takes one engine
step, then side B, then A, ... so every slow spell lands on both within one step (~0.1 s).

Each side's engine gets a :class:`PausableClock` that stands still while the other side runs,
so its timestamps, and therefore its TTFT/TPOT, count only its own work. Only ``concurrency``
mode can be interleaved (arrival mode waits for wall-clock arrivals).

A side is an engine in this process (:class:`InProcessSide`) or a worker process running
another source tree, e.g. the baseline commit (:class:`SubprocessSide`, protocol in
:mod:`sagellm.benchmarks.gate_worker`).
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sagellm.benchmarks.config import BenchmarkConfig
from sagellm.benchmarks.runner import BenchmarkRunner


class LockstepError(RuntimeError):
    """A side could not be started or died mid-run."""


class PausableClock:
    """Monotonic seconds (``time.perf_counter`` minus the time spent paused). Starts paused.

    Invariant: while paused, successive calls return the same value."""

    def __init__(self) -> None:
        self._paused_total_s = 0.0
        self._paused_at: float | None = time.perf_counter()

    def __call__(self) -> float:
        now = self._paused_at if self._paused_at is not None else time.perf_counter()
        return now - self._paused_total_s

    def pause(self) -> None:
        if self._paused_at is None:
            self._paused_at = time.perf_counter()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total_s += time.perf_counter() - self._paused_at
            self._paused_at = None


class Side(Protocol):
    name: str

    def step(self) -> bool:
        """Advance one engine step; False once the run has ended (then :meth:`repeats`)."""
        ...

    def repeats(self) -> list[dict]:
        """Metrics of every repeat, in order (flat dicts as in repeats.json)."""
        ...

    def close(self) -> None: ...


def check_lockstep_config(config: BenchmarkConfig) -> None:
    if config.mode != "concurrency":
        raise ValueError(
            f"mode: lockstep comparison needs mode 'concurrency' (got {config.mode!r}): "
            "arrival mode waits for wall-clock arrivals, which a paused clock cannot follow"
        )


class InProcessSide:
    """``engine`` (any BaseEngine whose ``clock()`` reads ``engine.clock_fn``) running
    ``config`` in this process."""

    def __init__(self, name: str, engine, config: BenchmarkConfig, peak_flops_per_s: float) -> None:
        check_lockstep_config(config)
        self.name, self.clock = name, PausableClock()
        engine.clock_fn = self.clock
        if engine.clock() != engine.clock():  # the clock is paused: it must not move
            raise LockstepError(f"{name}: engine.clock() does not read engine.clock_fn")
        self._gen = BenchmarkRunner(engine, progress=False).iter_run(config, peak_flops_per_s)
        self._repeats: list[dict] | None = None

    def step(self) -> bool:
        if self._repeats is not None:
            return False
        self.clock.resume()
        try:
            next(self._gen)
            return True
        except StopIteration as stop:
            self._repeats = [r.metrics for r in stop.value.repeats]
            return False
        finally:
            self.clock.pause()

    def repeats(self) -> list[dict]:
        if self._repeats is None:
            raise LockstepError(f"{self.name}: the run has not finished")
        return self._repeats

    def close(self) -> None:
        self._gen.close()


class SubprocessSide:
    """A :mod:`sagellm.benchmarks.gate_worker` process importing ``sagellm`` from
    ``source_dir`` (a checkout of another commit), running the YAML config ``config_path``.

    The worker loads its engine while the constructor returns; the first :meth:`step` waits
    until it is ready. A worker silent for ``answer_timeout_s`` (load or one step) is killed
    and reported, so a hung side cannot hang the gate."""

    def __init__(
        self,
        name: str,
        source_dir: str | Path,
        config_path: str | Path,
        peak_flops_per_s: float,
        log_path: str | Path | None = None,
        answer_timeout_s: float = 600.0,
    ) -> None:
        self.name, self.answer_timeout_s = name, answer_timeout_s
        env = dict(os.environ, PYTHONPATH=str(Path(source_dir).resolve()))
        self._log = open(log_path or os.devnull, "w")  # noqa: SIM115 (closed in close())
        cmd = [sys.executable, "-m", "sagellm.benchmarks.gate_worker", "--config"]
        cmd += [str(Path(config_path).resolve()), "--peak-flops", repr(peak_flops_per_s)]
        self._proc = subprocess.Popen(
            cmd,
            cwd=str(Path(source_dir).resolve()),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._ready = False
        self._repeats: list[dict] | None = None
        self._log_path = log_path

    def _read(self) -> dict:
        # one request, one answer: nothing is buffered while we wait, so select is exact
        ready, _, _ = select.select([self._proc.stdout], [], [], self.answer_timeout_s)
        if not ready:
            self._proc.kill()
            raise LockstepError(f"{self.name}: no answer in {self.answer_timeout_s:.0f} s")
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            where = f"; its log: {self._log_path}" if self._log_path else ""
            raise LockstepError(f"{self.name}: worker exited with status {code}{where}")
        msg = json.loads(line)
        if "error" in msg:
            raise LockstepError(f"{self.name}: {msg['error']}")
        return msg

    def wait_ready(self) -> None:
        if not self._ready:
            self._read()  # {"ready": true}
            self._ready = True

    def step(self) -> bool:
        if self._repeats is not None:
            return False
        self.wait_ready()
        self._proc.stdin.write("step\n")
        self._proc.stdin.flush()
        msg = self._read()
        if msg.get("done"):
            self._repeats = msg["repeats"]
            return False
        return True

    def repeats(self) -> list[dict]:
        if self._repeats is None:
            raise LockstepError(f"{self.name}: the run has not finished")
        return self._repeats

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()
                self._proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._log.close()


def run_lockstep(sides: Sequence[Side], seed: int = 0) -> list[list[dict]]:
    """Step the sides in rounds, each side one step per round, until all have finished; a
    side that ends first drops out. The order within a round is drawn at random (``seed``):
    going first or second after a long step is not the same (measured: a fixed A-then-B order
    made B's prefill steps 1-3% slower), and a random order turns that bias into noise that
    the median over repeats absorbs. Returns each side's per-repeat metrics; closes the
    sides."""
    rng = random.Random(seed)
    try:
        for s in sides:
            if hasattr(s, "wait_ready"):
                s.wait_ready()
        active = list(sides)
        while active:
            order = rng.sample(active, len(active))
            done = {id(s) for s in order if not s.step()}
            active = [s for s in active if id(s) not in done]
        return [s.repeats() for s in sides]
    finally:
        for s in sides:
            s.close()


def split_repeats(repeats: int, parts: int) -> list[tuple[int, int]]:
    """``(first repeat, count)`` for each of up to ``parts`` near-equal consecutive shares."""
    parts = max(1, min(parts, repeats))
    sizes = [repeats // parts + (i < repeats % parts) for i in range(parts)]
    return [(sum(sizes[:i]), n) for i, n in enumerate(sizes)]


def run_in_generations(
    config: BenchmarkConfig,
    generations: int,
    make_sides: Callable[[BenchmarkConfig, int], Sequence[Side]],
) -> list[list[dict]]:
    """``config.repeats`` split over ``generations`` successive lockstep runs, each on fresh
    sides from ``make_sides(part_config, k)``: a process's (or an engine's) memory layout
    makes identical code a few percent faster or slower for its whole life, so fresh sides
    turn that lottery into noise the median absorbs. Generation k replays the workload
    seeds that follow generation k-1's, so repeat r always uses seed + r. Returns each
    side's per-repeat metrics, concatenated over the generations."""
    out: list[list[dict]] | None = None
    for k, (first, n) in enumerate(split_repeats(config.repeats, generations)):
        wl = config.workload.model_copy(update={"seed": config.workload.seed + first})
        part = config.model_copy(update={"repeats": n, "workload": wl})
        runs = run_lockstep(make_sides(part, k), seed=k)
        out = runs if out is None else [a + b for a, b in zip(out, runs, strict=True)]
    return out or []
