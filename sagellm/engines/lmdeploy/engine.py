"""LMDeploy's PyTorch engine behind :class:`~sagellm.core.protocol.BaseEngine`, hooks on.

GPU only: LMDeploy's PyTorch engine asserts a cuda/ascend/maca/camb device, so creating this
engine without ``engine.device: cuda`` is a ConfigError; its inference tests are marked ``gpu``.
It has no float32 path (``PytorchEngineConfig`` allows auto/float16/bfloat16): ``model.dtype``
must be ``bfloat16``.
The engine is ``lmdeploy.pytorch.engine.Engine`` (imported from the patched overlay) in eager
mode (comm hooks need it); each request is one LMDeploy session driven through
``EngineInstance.async_stream_infer``; ``step()`` advances LMDeploy's loop until at least one
request produced tokens. Attached at start: :class:`LmdeployKVManager` (block info, eviction
events, migration plans), :class:`PrefixReuseBridge` (prefix metrics),
:class:`StrategyDecider` (the configured ranking strategy decides admission order and
preemption victims) and :class:`CommCallStats` (collective bytes and latency).

Not done: TurboMind (its C++ SequenceManager needs its sources and a CUDA build; only the
PyTorch backend carries the hooks); per-step timing beyond what LMDeploy's loop exposes.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sagellm.core.config import EngineConfig
from sagellm.core.errors import ConfigError, InvalidRequestError
from sagellm.core.types import (
    Request,
    RequestId,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
    StepMetrics,
)
from sagellm.engines.lmdeploy.comm_hooks import CommCallStats
from sagellm.engines.lmdeploy.compat import ALLOW_ENV, transformers5_overrides, unsupported_versions
from sagellm.engines.lmdeploy.kv_manager import LmdeployKVManager
from sagellm.engines.lmdeploy.overlay import activate_overlay
from sagellm.engines.lmdeploy.prefix_hooks import PrefixReuseBridge
from sagellm.engines.lmdeploy.scheduler import LMDEPLOY_CAPABILITIES, SequenceInfo, StrategyDecider
from sagellm.engines.token_prompts import token_id_batch
from sagellm.models import resolve_model_path

_DTYPES = {"bfloat16": "bfloat16"}  # PytorchEngineConfig asserts auto/float16/bfloat16


@dataclass
class _Live:
    session_id: int
    stream: Any  # the request's async generator of EngineOutput
    task: Any = None  # its pending __anext__()
    tokens: list[int] = field(default_factory=list)


class LmdeployEngine:
    """``BaseEngine`` over LMDeploy's PyTorch engine (CUDA) with the sagellm patch series."""

    capabilities = LMDEPLOY_CAPABILITIES

    def __init__(self, config: EngineConfig) -> None:
        if config.device != "cuda":
            raise ConfigError(
                f"engine.device: lmdeploy's PyTorch engine runs on CUDA only; allowed: 'cuda' "
                f"(got {config.device!r})"
            )
        if config.model.dtype not in _DTYPES:
            raise ConfigError(
                f"model.dtype: lmdeploy's PyTorch engine has no {config.model.dtype!r} path; "
                f"allowed: {', '.join(repr(d) for d in _DTYPES)} (so its greedy output is "
                f"compared with the native engine in bfloat16, not with the fp32 oracle)"
            )
        bad = unsupported_versions()
        if bad and os.environ.get(ALLOW_ENV) != "1":
            raise ConfigError(
                f"engine.name: lmdeploy 0.11.0 runs outside its declared requirements here: "
                f"{'; '.join(bad)}. There its PyTorch engine's greedy output differed from HF's "
                f"(sagellm.engines.lmdeploy.compat); install the declared versions, or set "
                f"{ALLOW_ENV}=1 to run it anyway"
            )
        decider = StrategyDecider(config.scheduling_strategy, config.block_size_tokens)
        self.patches = activate_overlay()
        model = resolve_model_path(config.model.path)
        if not (model / "config.json").is_file():
            raise ConfigError(f"model.path: lmdeploy loads HF checkpoint folders; got {model}")
        import lmdeploy.pytorch.distributed as ld_dist
        from lmdeploy.messages import PytorchEngineConfig
        from lmdeploy.pytorch.engine import Engine

        self.config = config
        self._engine = Engine.from_pretrained(
            str(model),
            engine_config=PytorchEngineConfig(
                dtype=_DTYPES[config.model.dtype],
                block_size=config.block_size_tokens,
                num_gpu_blocks=config.num_kv_blocks or 0,
                max_batch_size=config.max_num_seqs,
                max_prefill_token_num=config.max_num_batched_tokens,
                session_len=config.max_model_len_tokens,
                enable_prefix_caching=config.enable_prefix_caching,
                eager_mode=True,
                device_type="cuda",
                hf_overrides=transformers5_overrides(model),
            ),
        )
        scheduler = self._engine.scheduler
        self.kv = LmdeployKVManager(scheduler)
        self.prefix = PrefixReuseBridge().attach(scheduler.block_trie)
        self.decider = decider
        scheduler.set_external_decider(decider)
        self.comm = CommCallStats()
        self._detach_comm = self.comm.attach(ld_dist)
        self._inst = self._engine.create_instance()
        self._t0 = time.perf_counter()
        self._sessions = itertools.count(1)
        self._ids = itertools.count()
        self._live: dict[RequestId, _Live] = {}
        self._outputs: dict[RequestId, list[int]] = {}
        self._metrics: dict[RequestId, RequestMetrics] = {}
        self._steps: list[StepMetrics] = []

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def add_request(self, request: Request) -> None:
        from lmdeploy.messages import GenerationConfig

        rid, sp = request.request_id, request.sampling
        if rid in self._metrics:
            raise InvalidRequestError(f"request_id {rid!r} is already in use")
        if not request.prompt_token_ids:
            raise InvalidRequestError(f"request {rid!r}: prompt is empty (need >= 1 token)")
        gen = GenerationConfig(
            max_new_tokens=sp.max_tokens,
            do_sample=sp.temperature > 0,
            temperature=sp.temperature or 1.0,
            top_p=sp.top_p,
            top_k=sp.top_k or 0,
            random_seed=sp.seed,
            ignore_eos=sp.ignore_eos,
            stop_token_ids=list(sp.stop_token_ids) or None,
        )
        session_id = next(self._sessions)
        prompt = list(request.prompt_token_ids)
        stream = self._inst.async_stream_infer(session_id, prompt, gen_config=gen)
        self._live[rid] = _Live(session_id, stream)
        self._outputs[rid] = []
        arrival = request.arrival_s if request.arrival_s is not None else self._now()
        self._metrics[rid] = RequestMetrics(rid, arrival, len(request.prompt_token_ids))
        self.decider.request_info[session_id] = SequenceInfo(
            priority=request.priority,
            tenant_id=request.tenant_id,
            ttft_slo_s=request.slo.ttft_s,
            tpot_slo_s=request.slo.tpot_s,
        )

    async def _advance(self) -> list[tuple[RequestId, Any]]:
        for live in self._live.values():
            if live.task is None:
                live.task = asyncio.ensure_future(live.stream.__anext__())
        tasks = {live.task: rid for rid, live in self._live.items()}
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        results = []
        for t in done:
            rid = tasks[t]
            self._live[rid].task = None
            try:
                results.append((rid, t.result()))
            except StopAsyncIteration:
                results.append((rid, None))
        return results

    def step(self) -> list[RequestOutput]:
        from lmdeploy.messages import ResponseType

        if not self._live:
            return []
        start = self._now()
        results = self._inst.req_sender.run_until_complete(self._advance())
        now = self._now()
        outs = []
        for rid, out in results:
            m = self._metrics[rid]
            if out is None or out.status not in (ResponseType.SUCCESS, ResponseType.FINISH):
                err = "stream ended" if out is None else out.status.name
                self._finish(rid, "error" if out is not None else "length", now)
                outs.append(RequestOutput(rid, [], True, m.finish_reason, error=err))
                continue
            new = list(out.token_ids)
            self._outputs[rid].extend(new)
            if new and m.first_token_s is None:
                m.first_token_s = now
            m.token_times_s.extend([now] * len(new))
            m.num_output_tokens = len(self._outputs[rid])
            done = out.status == ResponseType.FINISH
            if done:
                self._finish(rid, "length" if m.num_output_tokens >= 1 else "stop", now)
            outs.append(RequestOutput(rid, new, done, m.finish_reason if done else None))
        self._steps.append(
            StepMetrics(
                step=len(self._steps),
                start_s=start,
                num_seqs=len(results),
                num_batched_tokens=sum(len(o.new_token_ids) for o in outs),
                num_prefill_tokens=0,  # LMDeploy's loop does not report the split per step
                num_decode_tokens=sum(len(o.new_token_ids) for o in outs),
                schedule_s=0.0,
                compute_s=now - start,
                sample_s=0.0,
                comm_s=sum(s.total_s for s in self.comm.by_op.values()),
                kv_blocks_used=self.kv.block_info().num_used_gpu_blocks,
            )
        )
        return outs

    def _finish(self, rid: RequestId, reason: str, now: float) -> None:
        live = self._live.pop(rid)
        self._inst.end(live.session_id)
        m = self._metrics[rid]
        m.finished_s, m.finish_reason = now, reason

    def abort(self, request_id: RequestId) -> bool:
        live = self._live.get(request_id)
        if live is None:
            return False
        self._inst.cancel(live.session_id)
        self._finish(request_id, "abort", self._now())
        return True

    def has_unfinished(self) -> bool:
        return bool(self._live)

    def generate(
        self,
        prompts: Sequence[str] | Sequence[list[int]],
        sampling: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[list[int]]:
        """Token-id prompts to completion (text is refused: no tokenizer is wired here)."""
        rids = []
        for p, sp in token_id_batch("lmdeploy", prompts, sampling):
            rids.append(f"gen-{next(self._ids)}")
            self.add_request(Request(rids[-1], p, sp))
        while any(r in self._live for r in rids):
            self.step()
        return [list(self._outputs[r]) for r in rids]

    def request_metrics(self) -> list[RequestMetrics]:
        return list(self._metrics.values())

    def step_metrics(self) -> list[StepMetrics]:
        return list(self._steps)

    def stats(self) -> dict[str, float]:
        info = self.kv.block_info()
        snap = self.prefix.metrics.snapshot()
        return {
            "num_steps": float(len(self._steps)),
            "num_kv_blocks": float(info.num_gpu_blocks),
            "num_kv_blocks_used": float(info.num_used_gpu_blocks),
            "num_evicted_seq_blocks": float(self.kv.num_evicted_blocks("seq")),
            "num_evicted_prefix_blocks": float(self.kv.num_evicted_blocks("prefix")),
            "prefix_hit_tokens": float(snap.num_hit_tokens),
            "prefix_query_tokens": float(snap.num_query_tokens),
            "comm_calls": float(sum(s.num_calls for s in self.comm.by_op.values())),
            "comm_bytes": float(sum(s.num_bytes for s in self.comm.by_op.values())),
        }

    def close(self) -> None:
        self._detach_comm()
        self._engine.close()
