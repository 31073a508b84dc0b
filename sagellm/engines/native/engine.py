"""NativeEngine: the embedded default engine (real weights, paged KV, continuous batching)."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from pathlib import Path

import torch

from sagellm.accel import AccelController
from sagellm.accel.speculative import DraftModel, SpecDecodeStats, Verifier
from sagellm.core.config import AccelConfig, EngineConfig, ModelConfig
from sagellm.core.errors import ConfigError, InvalidRequestError
from sagellm.core.types import (
    Request,
    RequestId,
    RequestMetrics,
    RequestOutput,
    SamplingParams,
    StepMetrics,
)
from sagellm.engines.native.calibrate import measure_matmul_flops_per_s, prefill_flop_model
from sagellm.engines.native.forced_decode import forced_decode_logits
from sagellm.engines.native.kv_cache import PagedKVCache, kv_bytes_per_token
from sagellm.engines.native.kv_manager import NativeKVManager
from sagellm.engines.native.kv_migration import MigrationDecider
from sagellm.engines.native.model import DecoderModel
from sagellm.engines.native.plan_exec import PlanExecution
from sagellm.engines.native.quant_load import quantize_engine_model
from sagellm.engines.native.queues import RequestQueues
from sagellm.engines.native.request_check import validate_request
from sagellm.engines.native.runtime import tune_malloc
from sagellm.engines.native.scoring import teacher_forced_logits
from sagellm.engines.native.sequence import SeqStatus, Sequence
from sagellm.engines.native.sparse_hook import SparseHook, make_sparse_hook
from sagellm.engines.native.speculative import make_drafter
from sagellm.engines.native.tokenizer import Tokenizer, load_tokenizer
from sagellm.engines.native.tp_group import TPGroup, rank_threads
from sagellm.engines.native.tp_shard import plan_shards
from sagellm.engines.native.weights import load_checkpoint
from sagellm.models import resolve_model_path
from sagellm.scheduler_ir import IRBuilder, IROptimizer, PlanLog, Strategy, make_strategy

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidRequestError("engine.device is 'cuda' but CUDA is not available")
    return torch.device(name)


def make_engine_strategy(name: str) -> Strategy:
    """The strategy ``EngineConfig.scheduling_strategy`` names; ConfigError listing the known
    names for an unknown one."""
    try:
        return make_strategy(name)
    except ValueError as err:
        raise ConfigError(f"engine.scheduling_strategy: {err}") from None


class NativeEngine(PlanExecution):
    """Runs a Llama/Qwen2/Qwen3 checkpoint over a paged KV cache with continuous batching.

    Use ``add_request`` + ``step`` for streaming, or ``generate`` for a blocking batch. Every
    step is the configured strategy's plan (``EngineConfig.scheduling_strategy``; assign
    ``engine.strategy`` to swap it), executed node by node (see ``plan_exec``).
    Invariant after every step: KV blocks in use == sum of running sequences' block tables.
    """

    capabilities = frozenset(
        {
            "continuous_batching",
            "chunked_prefill",
            "preemption_recompute",
            "streaming",
            "abort",
            "prefix_reuse",
            "kv_tiers",
            "kv_quotas",
            "kv_defrag",
            "scheduler_ir",
            "sparse_attention",
            "speculative_decoding",
        }
    )

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = cfg = config or EngineConfig()
        # every timestamp the engine records comes from here (seconds, monotonic); a benchmark
        # interleaving two engines gives each a clock that stops while the other one runs
        self.clock_fn: Callable[[], float] = time.perf_counter
        tune_malloc()
        threads = rank_threads(cfg.num_threads, cfg.tp_size)
        if threads is not None:
            torch.set_num_threads(threads)
        self.device = _device(cfg.device)
        self.dtype = _DTYPES[cfg.model.dtype]
        path = resolve_model_path(cfg.model.path)
        ckpt = load_checkpoint(path, self.dtype)
        self.arch = ckpt.arch
        shards = plan_shards(self.arch, cfg.tp_size) if cfg.tp_size > 1 else None
        self.model = DecoderModel(
            ckpt.arch, ckpt.state_dict, self.dtype, self.device, shards[0] if shards else None
        )
        del ckpt
        self.tokenizer: Tokenizer | None = self._tokenizer(path, cfg.model)
        self.max_model_len = cfg.max_model_len_tokens or self.arch.max_position_embeddings
        # the KV cache's element type: the model dtype, or int8 rows with scales (kv_cache)
        self.kv_dtype = torch.int8 if cfg.accel.kv_cache_dtype == "int8" else self.dtype
        self.kv_bytes_per_token = kv_bytes_per_token(
            self.arch.num_layers, self.arch.num_kv_heads, self.arch.head_dim, self.kv_dtype
        )
        # tensor parallelism: None at tp_size 1 (the plain path, untouched); set before the
        # calibration forward of awq/gptq below, which asks for it
        self.tp: TPGroup | None = None
        self.accel = AccelController()
        self.accel.setup(cfg)
        quantize_engine_model(self, self.accel)  # once, at load (no-op when off)
        bs = cfg.block_size_tokens
        bytes_per_block = bs * self.kv_bytes_per_token
        num_blocks = cfg.num_kv_blocks or max(1, cfg.kv_cache_bytes // bytes_per_block)
        self.cache = PagedKVCache(
            self.arch.num_layers,
            num_blocks,
            bs,
            self.model.num_kv_heads,  # rank 0's own KV heads with tensor parallelism
            self.arch.head_dim,
            self.kv_dtype,
            self.device,
        )
        if shards is not None:
            self.tp = TPGroup.start(cfg, path, self.device, num_blocks, shards, threads or 1)
            self.model.row_parallel = self.tp.row_parallel
        # sparse attention (None = dense); replace only while no request runs
        self.sparse: SparseHook | None = make_sparse_hook(cfg, self.cache)
        self._steps: list[StepMetrics] = []  # before the KV manager: its migration reads it
        self.kv = NativeKVManager.from_config(
            self.cache.kv, cfg, self._policy_kwargs(cfg), self._migration(cfg)
        )
        if self.tp is not None:
            self.tp.mirror_block_copies(self.kv.pool)
        self.queues = RequestQueues(self.kv)
        # the one scheduling path: strategy -> IRBuilder -> IROptimizer -> plan -> execution
        self.strategy: Strategy = make_engine_strategy(cfg.scheduling_strategy)
        self.builder = IRBuilder(overlap_tier_loads=cfg.overlap_kv_loads)
        # tp_fuse_all_reduce False: no bucketing, one collective per request and layer-part
        fuse = {} if cfg.tp_fuse_all_reduce else {"small_all_reduce_bytes": 0}
        self.optimizer = IROptimizer(cfg.max_num_batched_tokens, **fuse)
        self.instance_id = "native-0"  # the name plans target (ExecutorAPI, routers)
        # speculative decoding (accel.speculative_tokens): drafter None = off
        self.drafter: DraftModel | None = make_drafter(cfg, self.model, num_blocks)
        self.verifier = Verifier()
        self.spec_stats = SpecDecodeStats()
        self.plan_log: PlanLog | None = None  # set to record requests and plans for replay
        self._num_plans = 0
        self._empty_steps = 0
        self.plan_s = self.execute_s = 0.0  # wall seconds making / executing plans (cumulative)
        self.num_failed_admissions = 0  # plan items left out: pool/quota refused, hit gone
        eos = set(self.arch.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self._seqs: dict[RequestId, Sequence] = {}
        self._metrics: dict[RequestId, RequestMetrics] = {}
        self._pending_outputs: list[RequestOutput] = []
        self._ids = itertools.count()
        # Debug/oracle hook: when True, the fp32 logits each request was sampled from are kept
        # in ``recorded_logits[request_id]`` (one [vocab] tensor per output token).
        self.record_logits = False
        self.recorded_logits: dict[RequestId, list[torch.Tensor]] = {}

    def _policy_kwargs(self, cfg: EngineConfig) -> dict[str, object]:
        """The cost-aware policy's recompute cost: this model's prefill FLOPs at the FLOP/s
        measured here at start; other policies need nothing."""
        if cfg.eviction_policy != "cost_aware" or not cfg.enable_prefix_caching:
            return {}
        return {
            "flop_model": prefill_flop_model(self.arch),
            "flops_per_s": measure_matmul_flops_per_s(self.device, self.dtype),
            "block_size_bytes": cfg.block_size_tokens * self.kv_bytes_per_token,
            "block_tokens": cfg.block_size_tokens,
        }

    def _migration(self, cfg: EngineConfig) -> MigrationDecider:
        """Demote/drop between KV tiers by ``cfg.migration_policy``, calibrated on this engine:
        its prefill steps' FLOP/s (a matmul measured here until one has run) and its tiers'
        copy rates (measured when the KV manager binds the decider). The callables capture
        no ``self``: a cycle back to the engine would keep its KV cache alive until the next
        full garbage collection."""
        steps = self._steps  # the live list (reset_metrics clears it in place)
        return MigrationDecider.from_config(
            cfg,
            prefill_flop_model(self.arch),
            functools.partial(measure_matmul_flops_per_s, self.device, self.dtype),
            lambda: steps,
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> NativeEngine:
        """Shorthand: ``NativeEngine.from_pretrained(path, dtype="bfloat16", num_kv_blocks=64)``."""
        model_keys = {"dtype", "tokenizer"}
        model = ModelConfig(
            path=str(path), **{k: v for k, v in overrides.items() if k in model_keys}
        )
        rest = {k: v for k, v in overrides.items() if k not in model_keys}
        return cls(EngineConfig(model=model, **rest))

    @staticmethod
    def _tokenizer(path: Path, mcfg: ModelConfig) -> Tokenizer | None:
        has_tok = path.suffix == ".gguf" or (path / "tokenizer.json").exists() or mcfg.tokenizer
        return load_tokenizer(path, mcfg.tokenizer) if has_tok else None

    # ------------------------------------------------------------------ admission

    def clock(self) -> float:
        return self.clock_fn()

    def add_request(self, request: Request) -> None:
        """Validate and queue ``request``; raise :class:`InvalidRequestError` if it cannot run."""
        validate_request(self, request)
        now = self.clock()
        arrival = request.arrival_s if request.arrival_s is not None else now
        metrics = RequestMetrics(request.request_id, arrival, len(request.prompt_token_ids))
        sp = request.sampling
        gen = None
        if not sp.greedy:
            gen = torch.Generator().manual_seed(
                sp.seed if sp.seed is not None else self.config.seed * 1_000_003 + next(self._ids)
            )
        seq = Sequence(
            request=request,
            token_ids=list(request.prompt_token_ids),
            num_prompt_tokens=len(request.prompt_token_ids),
            metrics=metrics,
            generator=gen,
            max_len_tokens=self.max_model_len,
        )
        self._seqs[request.request_id] = seq
        self._metrics[request.request_id] = metrics
        self.queues.add(seq)
        if self.plan_log is not None:
            self.plan_log.add(request)

    def abort(self, request_id: RequestId) -> bool:
        """Stop a request; its final output (finish_reason "abort") comes with the next step."""
        seq = self._seqs.get(request_id)
        if seq is None or seq.status is SeqStatus.FINISHED:
            return False
        self.queues.release(seq)
        self._finish(seq, "abort")
        self._pending_outputs.append(RequestOutput(request_id, [], True, "abort"))
        return True

    def has_unfinished(self) -> bool:
        return self.queues.has_unfinished() or bool(self._pending_outputs)

    # ------------------------------------------------------------------ the step
    # ``step`` (the configured strategy's plan, or a given one) lives in PlanExecution.

    def reset_prefix_cache(self) -> bool:
        """Empty the prefix cache (device, host and disk tiers); False while requests run."""
        return self.kv.reset_prefix_cache()

    def defragment(self):
        """Compact the device KV pool between steps (outputs do not change); returns the
        :class:`~sagellm.kv_runtime.DefragResult`."""
        return self.kv.defragment()

    def _append_token(self, seq: Sequence, tok: int, now: float) -> RequestOutput:
        seq.token_ids.append(tok)
        m = seq.metrics
        if m.first_token_s is None:
            m.first_token_s = now
        m.token_times_s.append(now)
        m.num_output_tokens = seq.num_output_tokens
        sp = seq.request.sampling
        reason = None
        if tok in sp.stop_token_ids or (not sp.ignore_eos and tok in self.eos_token_ids):
            reason = "stop"
        elif seq.num_output_tokens >= sp.max_tokens or len(seq.token_ids) >= seq.max_len_tokens:
            reason = "length"
        if reason is not None:
            self.queues.release(seq)
            self._finish(seq, reason)
        return RequestOutput(seq.request_id, [tok], reason is not None, reason, m.num_cached_tokens)

    def _finish(self, seq: Sequence, reason: str) -> None:
        if self.drafter is not None:
            self.drafter.release(seq.request_id)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        seq.metrics.finished_s = self.clock()
        seq.metrics.finish_reason = reason

    def _fail(self, seqs: list[Sequence], err: Exception) -> list[RequestOutput]:
        out = []
        for seq in seqs:
            self.queues.release(seq)
            self._finish(seq, "error")
            out.append(RequestOutput(seq.request_id, [], True, "error", error=str(err)))
        return out

    def _step_metrics(
        self, items, inputs, t0, schedule_s, compute_s, kv_load_s, extra_kv_tokens=0
    ) -> StepMetrics:
        """One forward's metrics; ``sample_s`` (and overlapped loads) are added later.
        ``extra_kv_tokens``: keys read beyond the items' computed tokens (a burst's later
        steps, decode_burst.py)."""
        arch = self.arch
        T = sum(n for _, n in items)
        n_logits = sum(inputs.num_logits)
        flops = (
            2.0 * arch.num_params * T
            + 4.0 * arch.num_layers * arch.num_heads * arch.head_dim * inputs.attended_tokens
            + 2.0 * arch.vocab_size * arch.hidden_size * n_logits
        )
        # num_computed_tokens already includes this step's tokens: every key read once
        kv_tokens = sum(s.num_computed_tokens for s, _ in items) + extra_kv_tokens
        kv_read = kv_tokens * self.kv_bytes_per_token
        return StepMetrics(
            step=len(self._steps),
            start_s=t0,
            num_seqs=len(items),
            num_batched_tokens=T,
            num_prefill_tokens=inputs.num_prefill_tokens,
            num_decode_tokens=inputs.num_decode_tokens,
            schedule_s=schedule_s,
            compute_s=compute_s,
            sample_s=0.0,
            kv_load_s=kv_load_s,
            flops=flops,
            bytes_moved=float(self.model.num_weight_bytes + kv_read),
            num_preempted=0,
            num_waiting=len(self.queues.waiting),
            kv_blocks_used=self.kv.num_referenced_blocks,
        )

    # ------------------------------------------------------------------ conveniences

    def generate(
        self,
        prompts: Seq[str] | Seq[list[int]],
        sampling: SamplingParams | Seq[SamplingParams] | None = None,
        chat: bool | None = None,
    ) -> list[list[int]]:
        """Run ``prompts`` (texts or token id lists) to completion; return output token ids.

        Texts are chat-templated when the model has a template (``chat=False`` turns it off).
        All requests are validated before any is queued.
        """
        if sampling is None or isinstance(sampling, SamplingParams):
            sampling = [sampling or SamplingParams()] * len(prompts)
        if len(sampling) != len(prompts):
            raise InvalidRequestError(
                f"got {len(sampling)} sampling params for {len(prompts)} prompts"
            )
        reqs = []
        for p, sp in zip(prompts, sampling, strict=True):
            ids = self.encode(p, chat) if isinstance(p, str) else list(p)
            rid = f"gen-{next(self._ids)}"
            reqs.append(Request(rid, ids, sp))
        for r in reqs:
            validate_request(self, r)
        for r in reqs:
            self.add_request(r)
        while any(self._seqs[r.request_id].status is not SeqStatus.FINISHED for r in reqs):
            self.step()
        return [self._seqs[r.request_id].output_token_ids for r in reqs]

    def prompt_logits(self, token_ids: list[int], from_tokens: int) -> torch.Tensor:
        """Teacher forcing: fp32 logits ``[len(token_ids) - from_tokens, vocab]`` of positions
        ``from_tokens .. len - 1`` (row i is the distribution of the token at position
        ``from_tokens + i + 1``; the last row predicts the token after the prompt).

        One request through the engine's path (batched with whatever else runs, chunked under
        the token budget); the prefix cache supplies at most ``from_tokens`` tokens, so scoring
        a continuation of a cached prefix computes only the continuation's blocks.
        """
        n = len(token_ids)
        if not 0 <= from_tokens < n:
            raise InvalidRequestError(
                f"from_tokens must be in [0, {n}) for a {n}-token prompt, got {from_tokens}"
            )
        rid = f"score-{next(self._ids)}"
        self.add_request(Request(rid, list(token_ids), SamplingParams(max_tokens=1)))
        seq = self._seqs[rid]
        seq.score_from_tokens = from_tokens
        while seq.status is not SeqStatus.FINISHED:
            self.step()
        if seq.finish_reason in ("error", "abort"):
            raise InvalidRequestError(f"scoring request {rid!r} ended with {seq.finish_reason}")
        rows, seq.scored_logits = seq.scored_logits, {}
        return torch.stack([rows[p] for p in range(from_tokens, n)])

    @property
    def vocab_size(self) -> int:
        """Rows of the model's logits (token ids are ``0 .. vocab_size - 1``)."""
        return self.arch.vocab_size

    def encode(self, text: str, chat: bool | None = None) -> list[int]:
        if self.tokenizer is None:
            raise InvalidRequestError("this checkpoint has no tokenizer; pass token ids instead")
        return self.tokenizer.encode_prompt(text, chat)

    def teacher_forced_logits(self, token_ids: list[int]) -> torch.Tensor:
        """fp32 logits [len(token_ids), vocab] of one forward over a scratch KV cache (the pool,
        queues and prefix index untouched; see ``scoring``). ``prompt_logits`` is the same on
        the serving path, with prefix caching."""
        return teacher_forced_logits(self, token_ids)

    def prefix_hit_tokens(self, request: Request) -> int:
        """Read-only: prompt tokens of ``request`` this engine's prefix cache holds now (whole
        blocks, tenant-salted; 0 without prefix caching). Routers ask this."""
        return self.kv.peek_tokens(list(request.prompt_token_ids), request.tenant_id)

    def output_token_ids(self, request_id: RequestId) -> list[int]:
        return self._seqs[request_id].output_token_ids

    def request_metrics(self) -> list[RequestMetrics]:
        return list(self._metrics.values())

    def step_metrics(self) -> list[StepMetrics]:
        return list(self._steps)

    def reset_metrics(self) -> None:
        """Forget finished requests and past step metrics (e.g. after a warm-up)."""
        self._steps.clear()
        self.spec_stats.reset()
        done = [r for r, s in self._seqs.items() if s.status is SeqStatus.FINISHED]
        for r in done:
            del self._seqs[r]
            del self._metrics[r]

    def stats(self) -> dict[str, float]:
        return {
            "num_steps": float(len(self._steps)),
            "num_kv_blocks": float(self.kv.num_blocks),
            "num_kv_blocks_used": float(self.kv.num_referenced_blocks),
            "kv_cache_bytes": float(self.cache.num_bytes),
            "num_waiting": float(len(self.queues.waiting)),
            "num_running": float(len(self.queues.running)),
            "num_plans": float(self._num_plans),
            "num_failed_admissions": float(self.num_failed_admissions),
            "weight_bytes": float(self.model.num_weight_bytes),
            **self.kv.stats(),
            **(self.sparse.stats() if self.sparse is not None else {}),
            **(self.spec_stats.as_dict() if self.drafter is not None else {}),
        }

    def set_sparse_attention(self, accel: AccelConfig) -> None:
        """Switch sparse attention (``accel``'s sparsity fields) between requests, keeping the
        weights: a benchmark compares dense and sparse on one loaded model. Raises
        InvalidRequestError while requests are unfinished, ConfigError as at start."""
        if self.has_unfinished():
            raise InvalidRequestError("set_sparse_attention needs an idle engine")
        cfg = self.config.model_copy(update={"accel": accel})
        self.sparse = make_sparse_hook(cfg, self.cache)
        self.config = cfg

    def decode_logits(self, prompt_ids: list[int], target_ids: list[int]) -> torch.Tensor:
        """Teacher-forced decode on the serving path: fp32 logits [len(target_ids), vocab],
        row i predicting ``target_ids[i]`` (see ``forced_decode``)."""
        return forced_decode_logits(self, prompt_ids, target_ids)

    def close(self) -> None:
        """Release files of the disk KV tier (if any) and stop the TP worker ranks."""
        self.kv.close()
        if self.tp is not None:
            self.tp.close()
