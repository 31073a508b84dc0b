"""Speculative decoding in the native engine: the drafter ``EngineConfig.accel`` names, built
over this engine's model, and the two places a step uses it (a mixin of ``NativeEngine``):

- ``_draft_tokens`` (after the strategy's decision, before ``IRBuilder.build``): each decoding
  request in the decision gets up to ``accel.speculative_tokens`` drafts, capped so that the
  step's tokens (drafts counted) stay within ``max_num_batched_tokens``, the extra KV blocks
  fit the pool and the tenant's hard quota, and no draft lies past ``max_tokens`` or the
  context; its item becomes a ``verify`` node of ``1 + drafts`` tokens.
- ``_verify_one`` (the sample node): ``Verifier.verify`` over the logits of every verified
  position; accepted tokens stream one by one through the usual finish checks (EOS, stop
  ids, max_tokens, context), so a stop inside an accepted run ends the request exactly
  there; KV rolls back to the verified tokens (computed-token count, blocks past the new
  length freed) and only then are completed blocks offered to the prefix cache.

Drafters: ``ngram`` (no model); ``layer_skip`` (the target's own weights minus
``speculative_skip_layers``); ``draft_model`` (a layer-truncated copy of the target by
default, or the checkpoint ``accel.draft_model`` names; with
``accel.speculative_draft_quantization`` its linears are quantized — on a copy of the layer
records, so the target's weights stay as they are — and the default draft becomes the
full-depth quantized copy of the target). Model drafters keep their own paged KV per request
(``PagedLM``), fed incrementally.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from sagellm.accel import AccelController
from sagellm.accel.speculative import (
    DraftModel,
    DraftRequest,
    ModelDrafter,
    NgramDrafter,
    SpecDecodeStats,
    Verifier,
)
from sagellm.core.config import AccelConfig, EngineConfig
from sagellm.core.errors import ConfigError
from sagellm.core.types import RequestOutput
from sagellm.engines.native.attention import Workspace
from sagellm.engines.native.model import DecoderModel
from sagellm.engines.native.paged_lm import PagedLM, layer_subset
from sagellm.engines.native.sequence import SeqStatus, Sequence
from sagellm.engines.native.weights import load_checkpoint
from sagellm.models import resolve_model_path
from sagellm.scheduler_ir.strategies.base import blocks_for
from sagellm.scheduler_ir.types import SchedulerState, StepDecision


def default_skip_layers(num_layers: int) -> tuple[int, ...]:
    """The odd layers of the middle half (a quarter of the layers; layer 1 of a 2-layer model)."""
    lo, hi = num_layers // 4, num_layers - num_layers // 4
    return tuple(i for i in range(lo, hi) if i % 2 == 1)


def _draft_decoder(cfg: EngineConfig, target: DecoderModel) -> DecoderModel:
    acc = cfg.accel
    base = target
    if acc.draft_model is not None:
        try:
            ckpt = load_checkpoint(resolve_model_path(acc.draft_model), target.dtype)
        except Exception as err:
            raise ConfigError(
                f"accel.draft_model: cannot load {acc.draft_model!r} ({err}); give a model "
                "alias, an HF checkpoint folder or a .gguf file with the target's vocabulary"
            ) from None
        if ckpt.arch.vocab_size != target.arch.vocab_size:
            raise ConfigError(
                f"accel.draft_model: {acc.draft_model!r} has a vocabulary of "
                f"{ckpt.arch.vocab_size} tokens, the target's has {target.arch.vocab_size}; "
                "a draft model must share the target's vocabulary"
            )
        base = DecoderModel(ckpt.arch, ckpt.state_dict, target.dtype, target.device)
    n_layers = len(base.layers)
    # the target itself, whole, drafts only as a quantized copy
    whole = acc.draft_model is not None or acc.speculative_draft_quantization is not None
    keep = acc.speculative_draft_layers
    if keep is None:
        keep = n_layers if whole else max(1, n_layers // 2)
    if keep > n_layers or (not whole and keep >= n_layers):
        top = n_layers if whole else n_layers - 1
        raise ConfigError(
            f"accel.speculative_draft_layers: {keep} not in [1, {top}] (the draft's layers)"
        )
    draft = layer_subset(base, range(keep)) if keep < n_layers else base
    if acc.speculative_draft_quantization is not None:
        draft = _quantized_copy(draft, acc)
    return draft


def _quantized_copy(model: DecoderModel, acc: AccelConfig) -> DecoderModel:
    """``model`` with its own layer records and lm_head slot, its dense linears quantized with
    ``acc.speculative_draft_quantization`` (tensors it does not quantize stay shared)."""
    view = copy.copy(model)
    view.layers = [dataclasses.replace(layer) for layer in model.layers]
    view.workspace = Workspace()
    ctl = AccelController()
    ctl.setup_accel(
        AccelConfig(
            enable_quantization=True,
            method=acc.speculative_draft_quantization,
            group_size=acc.group_size,
            quantize_lm_head=acc.quantize_lm_head,
        )
    )
    try:
        return ctl.get_quantized_model(view)
    except ConfigError as err:
        raise ConfigError(f"accel.speculative_draft_quantization: {err}") from None


def make_drafter(
    cfg: EngineConfig,
    target: DecoderModel,
    num_blocks: int,
) -> DraftModel | None:
    """The drafter ``cfg.accel`` asks for (None when speculative decoding is off)."""
    acc = cfg.accel
    if acc.speculative_tokens is None:
        return None
    if acc.speculative_method == "ngram":
        return NgramDrafter(acc.speculative_ngram_min_tokens, acc.speculative_ngram_max_tokens)
    n_layers = len(target.layers)
    if acc.speculative_method == "layer_skip":
        skip = (
            acc.speculative_skip_layers
            if acc.speculative_skip_layers is not None
            else default_skip_layers(n_layers)
        )
        bad = [i for i in skip if not 0 <= i < n_layers]
        keep = [i for i in range(n_layers) if i not in set(skip)]
        if bad or not skip or not keep:
            raise ConfigError(
                f"accel.speculative_skip_layers: {list(skip)} must be a non-empty proper subset "
                f"of the target's layers 0..{n_layers - 1}"
            )
        model = layer_subset(target, keep)
    else:  # draft_model (the config validated the name)
        model = _draft_decoder(cfg, target)
    blocks = acc.speculative_draft_kv_blocks or num_blocks
    return ModelDrafter(PagedLM(model, blocks, cfg.block_size_tokens), acc.speculative_method)


class SpeculativeSteps:
    """The speculative half of the plan path (see the module docstring)."""

    drafter: DraftModel | None
    verifier: Verifier
    spec_stats: SpecDecodeStats

    def _draft_tokens(self, decision: StepDecision, state: SchedulerState) -> dict[str, int]:
        """Propose drafts for the decision's decoding requests (stored on their sequences);
        returns request id -> number of drafts, for ``IRBuilder.build``."""
        if self.drafter is None:
            return {}
        views, bs = state.by_id(), state.block_size_tokens
        budget = state.max_num_batched_tokens - sum(n for _, n in decision.items)
        free = state.num_free_blocks
        for rid, n in decision.items:
            v = views[rid]
            held = v.num_blocks if v.running else v.num_prefix_hit_tokens // bs
            free -= max(0, blocks_for(v.start_tokens + n, bs) - held)
        rooms = dict(state.tenant_free_blocks)
        seqs = self._seq_map()
        counts = {rid: 0 for rid, _ in decision.items}
        for rid, _ in decision.items:
            counts[rid] += 1
        reqs = []
        for rid, n in decision.items:
            v = views[rid]
            decoding = v.running and v.num_computed_tokens == v.num_tokens - 1
            if n != 1 or counts[rid] != 1 or rid in decision.preempt or not decoding:
                continue
            if v.num_tokens <= v.num_prompt_tokens:
                continue
            k = min(
                self.config.accel.speculative_tokens,
                budget,
                v.max_tokens - v.num_output_tokens - 1,
                self.max_model_len - v.num_tokens - 1,
            )
            room = min(free, rooms.get(v.tenant_id, free))
            while k > 0 and blocks_for(v.num_tokens + k, bs) - blocks_for(v.num_tokens, bs) > room:
                k -= 1
            if k <= 0:
                continue
            extra = blocks_for(v.num_tokens + k, bs) - blocks_for(v.num_tokens, bs)
            free -= extra
            if v.tenant_id in rooms:
                rooms[v.tenant_id] -= extra
            budget -= k
            s = seqs[rid]
            reqs.append(DraftRequest(rid, s.token_ids, k, s.request.sampling, s.generator))
        if not reqs:
            return {}
        try:
            drafts = self.drafter.generate_draft(reqs)
        except RuntimeError:  # e.g. out of memory in a draft model: plain decodes this step
            for r in reqs:
                self.drafter.release(r.request_id)
            return {}
        out = {}
        for r, d in zip(reqs, drafts, strict=True):
            if len(d):
                seqs[r.request_id].draft = d
                out[r.request_id] = len(d)
        return out

    def _verify_one(self, seq: Sequence, rows: torch.Tensor, now: float) -> RequestOutput:
        """Verify ``seq``'s draft against the target's ``rows`` [1 + drafts, V]; append the
        accepted tokens (stopping where the request finishes) and roll back its KV."""
        draft, seq.draft = seq.draft, None
        res = self.verifier.verify(rows, draft, seq.request.sampling, seq.generator)
        self.spec_stats.record(len(draft), res.num_accepted)
        emitted: list[int] = []
        out = None
        for tok in res.token_ids:
            out = self._append_token(seq, tok, now)
            emitted.append(tok)
            if out.finished:
                break
        if self.record_logits:
            rec = self.recorded_logits.setdefault(seq.request_id, [])
            rec.extend(rows[i].cpu() for i in range(len(emitted)))
        if seq.status is not SeqStatus.FINISHED:
            # verified KV: the pending token and the accepted drafts; the bonus token pends
            seq.num_computed_tokens = len(seq.token_ids) - 1
            self.kv.truncate(seq, blocks_for(len(seq.token_ids), self.config.block_size_tokens))
            self.kv.commit(seq)
        return RequestOutput(
            seq.request_id, emitted, out.finished, out.finish_reason, out.num_cached_tokens
        )
