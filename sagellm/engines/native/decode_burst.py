"""Multi-step decode: one plan's forward runs several greedy decode steps in one C++ call.

With ``EngineConfig.num_decode_steps = k > 1`` (vLLM's ``num_scheduler_steps``), a plan whose
forward node holds only decodes (one new token per sequence, no drafts) of at most 16
sequences (csrc/final_logits.cpp's rows), all greedy, runs up to ``k`` steps in
``torch.ops.sagellm.decode_burst`` (csrc/decode_burst.cpp): each step the ops of the one-step
path (embedding, decoder_layers, final_logits, argmax), so the tokens are the same bits. What
goes is the Python between steps: snapshot, strategy, IR build, inputs, sampler bookkeeping
(~1.5 ms of a 13-16 ms batch-1 bf16 step of SmolLM2-135M on the 2-core Zen 3 VM).

Invariants:
- a burst never passes a request's ``max_tokens`` or context length (``k`` is cut to the
  fewest tokens any of its sequences may still emit), and it ends at the step where any
  sequence picks a stop token (its ``stop_token_ids``, or EOS unless ``ignore_eos``);
- each step's tokens carry the time that step finished (the engine's clock at the call plus
  the C++ steady-clock offset), so TTFT/TPOT/ITL are per token as in one-step decoding, and
  each step gets its own ``StepMetrics`` record;
- blocks for all ``k`` positions are allocated before the call (within the pool and each
  tenant's quota, else the plan runs one step); blocks a shortened burst did not fill serve the
  sequence's next steps; completed blocks enter the prefix cache when the tokens are appended.

Runs one step instead where the C++ path does not apply: TP, sparse attention, speculative
decoding, recorded logits, scored prompts, sampled (non-greedy) requests, non-CPU devices,
quantized weights, more than 16 sequences. New requests wait for the burst to end (at most
``k`` steps), the price vLLM's multi-step scheduling paid too. Bursts apply to every plan the
engine executes, its strategy's or one submitted through ``ExecutorAPI``; a plan log replays to
the same tokens under the same ``num_decode_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sagellm.core.types import RequestOutput
from sagellm.engines.native.kv_manager import AllocStatus
from sagellm.engines.native.model import BURST_MAX_SEQS
from sagellm.engines.native.sequence import SeqStatus, Sequence
from sagellm.scheduler_ir.strategies.base import blocks_for


@dataclass(frozen=True)
class BurstCounts:
    """One burst step's token counts, as ``_step_metrics`` reads them from ``BatchInputs``."""

    num_prefill_tokens: int
    num_decode_tokens: int
    attended_tokens: int
    num_logits: tuple[int, ...]


class DecodeBursts:
    """The burst half of the plan path (a mixin of ``PlanExecution``)."""

    def _burst_steps(self, items, drafts) -> int:
        """Steps this forward may run as a burst (<= 1: the one-step path)."""
        k = self.config.num_decode_steps
        if k <= 1 or drafts or self.tp is not None or self.sparse is not None:
            return 1
        if self.record_logits or self.device.type != "cpu" or len(items) > BURST_MAX_SEQS:
            return 1
        for seq, n in items:
            sp = seq.request.sampling
            if n != 1 or not sp.greedy or seq.score_from_tokens is not None:
                return 1
            if seq.num_computed_tokens != len(seq.token_ids) - 1:
                return 1
            k = min(k, sp.max_tokens - seq.num_output_tokens)
            k = min(k, seq.max_len_tokens - len(seq.token_ids))
        return k

    def _reserve_burst(self, seqs: list[Sequence], steps: int) -> bool:
        """Blocks for each sequence's next ``steps`` positions, within the pool and the
        tenants' quotas (a refusal is not a violation: the plan then runs one step)."""
        bs = self.config.block_size_tokens
        need = [blocks_for(s.num_computed_tokens + steps, bs) - len(s.block_ids) for s in seqs]
        per_tenant: dict[str, int] = {}
        for s, n in zip(seqs, need, strict=True):
            per_tenant[s.request.tenant_id] = per_tenant.get(s.request.tenant_id, 0) + n
        if sum(need) > self.kv.num_available_blocks:
            return False
        if not all(self.kv.quota.can_charge(t, n) for t, n in per_tenant.items() if n):
            return False
        return all(
            self.kv.allocate(s, n) is AllocStatus.OK for s, n in zip(seqs, need, strict=True)
        )

    def _run_burst(self, items, steps: int, run, t0: float) -> bool:
        """Run ``items`` (decodes, see ``_burst_steps``) for up to ``steps`` steps; their tokens
        wait in ``run.bursts`` for the plan's sample node (``t0``: the engine's clock when the
        forward node began). False, with nothing computed, where the blocks or the C++ path
        are not there (the one-step path runs instead)."""
        seqs = [s for s, _ in items]
        if not self._reserve_burst(seqs, steps):
            return False
        c0 = self.clock()
        try:
            got = self.model.decode_burst(
                self.cache,
                [s.token_ids[-1] for s in seqs],
                [s.num_computed_tokens for s in seqs],
                [s.block_ids for s in seqs],
                steps,
                [self._stop_ids(s) for s in seqs],
            )
        except RuntimeError as err:  # e.g. out of memory: fail these requests, keep serving
            run.outputs.extend(self._fail(seqs, err))
            run.dropped.update(s.request_id for s in seqs)
            return True
        if got is None:
            return False
        tokens, rel_s = got
        computed = [s.num_computed_tokens for s in seqs]
        for s in seqs:
            s.num_computed_tokens += 1
        schedule_s, run.schedule_s = run.schedule_s + (c0 - t0), 0.0
        kv_load_s, run.kv_load_s = run.kv_load_s, 0.0
        start_s, prev_s = run.t0, 0.0
        for i, done_s in enumerate(rel_s):
            counts = BurstCounts(0, len(seqs), sum(c + i + 1 for c in computed), (1,) * len(seqs))
            step = self._step_metrics(
                items, counts, start_s, schedule_s, done_s - prev_s, kv_load_s, i * len(seqs)
            )
            if i == 0:
                step = replace(step, num_preempted=run.num_preempted)
            self._steps.append(step)
            run.step = step
            start_s, prev_s, schedule_s, kv_load_s = c0 + done_s, done_s, 0.0, 0.0
        run.num_preempted = 0
        run.t0 = c0 + rel_s[-1]
        times_s = [c0 + r for r in rel_s]
        for s, toks in zip(seqs, tokens, strict=True):
            run.bursts[s.request_id] = (toks, times_s)
        return True

    def _stop_ids(self, seq: Sequence) -> list[int]:
        sp = seq.request.sampling
        eos = () if sp.ignore_eos else tuple(self.eos_token_ids)
        return list(dict.fromkeys((*sp.stop_token_ids, *eos)))

    def _emit_burst(self, seq: Sequence, tokens: list[int], times_s: list[float]):
        """Append a burst's tokens to ``seq`` (stopping where it finishes), each at its step's
        time; its computed KV then covers every token but the new pending one."""
        emitted: list[int] = []
        out = None
        for tok, now in zip(tokens, times_s, strict=True):
            out = self._append_token(seq, tok, now)
            emitted.append(tok)
            if out.finished:
                break
        if seq.status is not SeqStatus.FINISHED:
            seq.num_computed_tokens = len(seq.token_ids) - 1
            self.kv.commit(seq)
        return RequestOutput(
            seq.request_id, emitted, out.finished, out.finish_reason, out.num_cached_tokens
        )
