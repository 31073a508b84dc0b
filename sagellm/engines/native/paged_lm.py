"""PagedLM: a :class:`DecoderModel` with its own small paged KV cache, keyed by request id —
the :class:`~sagellm.accel.speculative.CausalLM` that speculative drafters (and
``run_speculative_decode``'s target) drive.

Invariants: per key, ``len(token_ids) == num_computed_tokens`` after every call (the KV of
every fed token is written); ``block_ids`` holds exactly ``ceil(tokens / block_size)`` blocks
from this cache's own free list (no sharing, no prefix cache); ``truncate`` frees the blocks
past the kept tokens, ``release`` all of them. An ``extend`` that finds too few free blocks
for a key leaves that key unchanged and returns None for it.

:func:`layer_subset` views a model through a subset of its layers (weights shared, not
copied): the self-speculative layer-skipping drafter and a layer-truncated draft copy.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence as Seq

import torch

from sagellm.engines.native.attention import Workspace
from sagellm.engines.native.batch_inputs import build_inputs
from sagellm.engines.native.kv_cache import PagedKVCache
from sagellm.engines.native.model import DecoderModel


def layer_subset(model: DecoderModel, keep: Seq[int]) -> DecoderModel:
    """``model`` with only layers ``keep`` (in order); embedding, final norm and lm_head are
    the target's. Shares the weight tensors; has its own attention workspace."""
    layers = list(keep)
    if not layers or any(not 0 <= i < len(model.layers) for i in layers):
        raise ValueError(f"layers {layers} not a non-empty subset of 0..{len(model.layers) - 1}")
    view = copy.copy(model)
    view.layers = [model.layers[i] for i in layers]
    view.arch = dataclasses.replace(model.arch, num_layers=len(layers))
    view.workspace = Workspace()
    return view


@dataclasses.dataclass
class _LMSeq:
    request_id: str
    token_ids: list[int] = dataclasses.field(default_factory=list)
    block_ids: list[int] = dataclasses.field(default_factory=list)
    num_computed_tokens: int = 0
    score_from_tokens: int | None = None  # build_inputs' prompt scoring: never used here


class PagedLM:
    """Runs ``model`` over its own ``num_blocks`` x ``block_size_tokens`` KV cache."""

    def __init__(self, model: DecoderModel, num_blocks: int, block_size_tokens: int) -> None:
        arch = model.arch
        self.model = model
        self.block_size = block_size_tokens
        self.cache = PagedKVCache(
            len(model.layers),
            num_blocks,
            block_size_tokens,
            arch.num_kv_heads,
            arch.head_dim,
            model.dtype,
            model.device,
        )
        self._free = list(range(num_blocks - 1, -1, -1))
        self._seqs: dict[str, _LMSeq] = {}

    @property
    def vocab_size(self) -> int:
        return self.model.arch.vocab_size

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def num_cached_tokens(self, key: str) -> int:
        s = self._seqs.get(key)
        return 0 if s is None else s.num_computed_tokens

    def _blocks_for(self, n_tokens: int) -> int:
        return -(-n_tokens // self.block_size)

    def extend(
        self, batch: Seq[tuple[str, Seq[int]]], all_positions: bool = False
    ) -> list[torch.Tensor | None]:
        items: list[tuple[_LMSeq, int]] = []
        got: list[_LMSeq | None] = []
        for key, tokens in batch:
            s = self._seqs.get(key) or _LMSeq(key)
            n = len(tokens)
            need = self._blocks_for(s.num_computed_tokens + n) - len(s.block_ids)
            if n == 0 or need > len(self._free):
                got.append(None)
                continue
            self._seqs[key] = s
            s.block_ids.extend(self._free.pop() for _ in range(need))
            s.token_ids.extend(tokens)
            items.append((s, n))
            got.append(s)
        if not items:
            return [None] * len(batch)
        inputs = build_inputs(
            items,
            self.block_size,
            self.model.arch.num_kv_heads,
            self.model.device,
            all_logits=all_positions,
        )
        logits = self.model.forward(
            inputs.input_ids, inputs.positions, inputs.meta, self.cache, inputs.logits_index
        )
        rows: dict[str, torch.Tensor] = {}
        j = 0
        for s, k in zip(inputs.sampled_seqs, inputs.num_logits, strict=True):
            rows[s.request_id] = logits[j : j + k]
            j += k
        for s, n in items:
            s.num_computed_tokens += n
        return [None if s is None else rows[s.request_id] for s in got]

    def truncate(self, key: str, num_tokens: int) -> None:
        s = self._seqs.get(key)
        if s is None or num_tokens >= s.num_computed_tokens:
            return
        keep = self._blocks_for(max(0, num_tokens))
        self._free.extend(reversed(s.block_ids[keep:]))
        del s.block_ids[keep:]
        del s.token_ids[num_tokens:]
        s.num_computed_tokens = num_tokens

    def release(self, key: str) -> None:
        s = self._seqs.pop(key, None)
        if s is not None:
            self._free.extend(reversed(s.block_ids))
