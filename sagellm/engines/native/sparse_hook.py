"""The engine's seam for sparse attention (``EngineConfig.accel.enable_sparsity``).

Two points of the one step path call it: ``build_inputs`` (``build_group``: which K/V blocks
and keys each group of sequences attends) and ``PlanExecution._forward`` after the forward
(``after_forward``: StreamingLLM frees the blocks no later query reads). The tensor logic
lives in ``sagellm.accel.sparse``.

Freed blocks leave ``None`` in the sequence's table (``seq.block_ids[j] is None``: logical
block j is gone), so ``len(block_ids)`` stays the logical length every allocation counts from.

Composition (each checked at engine start, a ConfigError naming the fields otherwise):

- prefix caching: refused with streaming (a freed middle block breaks the chained block hashes
  a cached prefix needs, and a hit would need blocks streaming threw away); allowed with Quest
  (blocks are never freed; a shared block has one summary; the cached KV of generated tokens
  was computed by Quest decode, as it was for the request that produced it).
- chunked prefill: streaming's mask is token-exact per query, so chunking does not change the
  output; Quest's prefill is dense (a one-token prompt chunk too).
- scheduling strategies: they see the logical table length as ``RequestView.num_blocks``; a
  streaming sequence holds fewer blocks than that, so a strategy preempting it expects more
  free blocks than it gets (admission then fails and retries, as for any refused plan).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from sagellm.accel.sparse import QuestDecode, QuestSummaries, StreamingPattern
from sagellm.core.config import EngineConfig
from sagellm.core.errors import ConfigError
from sagellm.engines.native.attention import build_group
from sagellm.engines.native.kv_cache import PagedKVCache
from sagellm.engines.native.sequence import Sequence


def _blocks(tokens: int, bs: int) -> int:
    return -(-tokens // bs)


class StreamingHook:
    """Sinks + window for every query; dead blocks back to the pool after each forward."""

    def __init__(self, pattern: StreamingPattern, block_size_tokens: int) -> None:
        self.pattern = pattern
        self.block_size = block_size_tokens
        self.num_freed_blocks = 0

    def build_group(self, seqs, starts, q_lens, num_computed, tables, block_size, device):
        live = [[(j, b) for j, b in enumerate(t) if b is not None] for t in tables]
        return build_group(
            starts,
            q_lens,
            num_computed,
            [[b for _, b in row] for row in live],
            block_size,
            device,
            block_positions=[[j for j, _ in row] for row in live],
            key_mask=self.pattern.key_mask,
        )

    def after_forward(self, seqs: list[Sequence], kv) -> None:
        for seq in seqs:
            dead = self.pattern.dead_blocks(seq.num_computed_tokens, self.block_size)
            self.num_freed_blocks += kv.drop_blocks(seq, dead)

    def peak_blocks(self, total_tokens: int, max_chunk_tokens: int) -> int:
        """Blocks one sequence of ``total_tokens`` holds at most (a chunk's blocks are
        allocated before the forward, the dead ones freed after it)."""
        bs = self.block_size
        bound = self.pattern.max_live_blocks(bs) + _blocks(max_chunk_tokens, bs) + 1
        return min(_blocks(total_tokens, bs), bound)

    def stats(self) -> dict[str, float]:
        return {"sparse_freed_blocks": float(self.num_freed_blocks)}


class QuestHook:
    """Top-k blocks by the Quest bound for every decode query; summaries kept per block."""

    def __init__(self, cache: PagedKVCache, top_k_blocks: int) -> None:
        num_layers, _, num_blocks, kvh, _, d = cache.kv.shape
        self.keys = cache.kv[:, 0]  # [layers, blocks, kvH, B, D]
        self.summaries = QuestSummaries(
            num_layers, num_blocks, kvh, d, cache.kv.dtype, cache.kv.device
        )
        self.top_k_blocks = top_k_blocks
        self.block_size = cache.block_size_tokens
        # request id -> (physical blocks summarised, in table order; preemptions then)
        self._done: dict[str, tuple[list[int], int]] = {}
        self.num_summarised_blocks = 0
        self.num_sparse_steps = 0

    def _ensure_summaries(self, seq: Sequence, num_full: int) -> None:
        ids = seq.block_ids[:num_full]
        have, preemptions = self._done.get(seq.request_id, ([], -1))
        if preemptions != seq.metrics.preemptions:
            have = []  # recomputed KV may differ from what was summarised
        todo = [b for i, b in enumerate(ids) if i >= len(have) or have[i] != b]
        if todo:
            self.summaries.update(self.keys, todo)
            self.num_summarised_blocks += len(todo)
        self._done[seq.request_id] = (ids, seq.metrics.preemptions)

    def build_group(self, seqs, starts, q_lens, num_computed, tables, block_size, device):
        group = build_group(starts, q_lens, num_computed, tables, block_size, device)
        if group.max_q != 1:
            return group  # prefill: dense
        complete = [c // block_size for c in num_computed]
        # a one-token prompt chunk stays dense: its budget is all of its complete blocks
        budget = [
            self.top_k_blocks if c >= s.num_prompt_tokens else n
            for s, c, n in zip(seqs, num_computed, complete, strict=True)
        ]
        self._done = {
            s.request_id: self._done[s.request_id] for s in seqs if s.request_id in self._done
        }
        if all(n <= k for n, k in zip(complete, budget, strict=True)):
            return group  # every complete block would be selected: dense is the same
        for s, n in zip(seqs, complete, strict=True):
            self._ensure_summaries(s, n)
        self.num_sparse_steps += 1
        sel = QuestDecode(
            summaries=self.summaries,
            table=group.block_ids.view(group.num_seqs, group.max_blocks),
            num_complete_blocks=torch.tensor(complete, dtype=torch.int64, device=device),
            query_pos=torch.tensor(num_computed, dtype=torch.int64, device=device),
            top_k_blocks=torch.tensor(budget, dtype=torch.int64, device=device),
            max_top_k_blocks=max(budget),
            block_size_tokens=block_size,
        )
        return replace(group, sparse=sel)

    def after_forward(self, seqs: list[Sequence], kv) -> None:
        return None  # summaries are made lazily, before the first decode that may select

    def peak_blocks(self, total_tokens: int, max_chunk_tokens: int) -> int:
        return _blocks(total_tokens, self.block_size)

    def stats(self) -> dict[str, float]:
        return {
            "sparse_summarised_blocks": float(self.num_summarised_blocks),
            "sparse_decode_steps": float(self.num_sparse_steps),
            "quest_summary_bytes": float(self.summaries.num_bytes),
        }


SparseHook = StreamingHook | QuestHook


def make_sparse_hook(cfg: EngineConfig, cache: PagedKVCache) -> SparseHook | None:
    """The hook ``cfg.accel`` asks for (None when sparsity is off); ConfigError naming the
    fields for a composition the engine refuses."""
    acc = cfg.accel
    if not acc.enable_sparsity:
        return None
    if acc.sparsity_method == "streaming":
        if cfg.enable_prefix_caching:
            raise ConfigError(
                "engine.accel.sparsity_method: 'streaming' frees KV blocks a cached prefix "
                "needs; set engine.enable_prefix_caching: false or sparsity_method: 'quest'"
            )
        pattern = StreamingPattern(acc.sink_tokens, acc.window_tokens)
        return StreamingHook(pattern, cfg.block_size_tokens)
    return QuestHook(cache, acc.quest_top_k_blocks)
