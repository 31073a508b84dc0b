"""Quest (Tang et al., 2024, "Quest: Query-Aware Sparsity for Efficient Long-Context LLM
Inference") over the paged KV cache.

Per KV block, layer and KV head the cache keeps the elementwise min and max of its keys
(``[layers, num_blocks, kv_heads, head_dim]`` each, model dtype). For a decode query ``q`` the
largest score any key of a block can reach is bounded by
``sum_d max(q_d * min_d, q_d * max_d)``; with grouped-query attention the bounds of the query
heads sharing a KV head are summed (one selection per KV head, so one gather serves the group;
the paper selects per query head). Each decode query attends to the ``top_k_blocks`` complete
blocks of highest bound plus its own (current, partly filled) block; complete blocks are the
only ones with a summary. Selected blocks are visited in position order, so when they cover the
whole sequence the result equals dense attention. Prefill is dense.

Summaries are computed from the cache after a block is complete (lazily, by the engine, before
the first decode that may select it); a shared prefix-cache block has one summary (same
content). Units: positions and counts in tokens/blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class QuestSummaries:
    """Min/max key of every (layer, physical block, KV head); rows of blocks never summarised
    hold garbage and must not be selected (``QuestDecode`` only selects complete blocks)."""

    def __init__(
        self, num_layers: int, num_blocks: int, num_kv_heads: int, head_dim: int, dtype, device
    ) -> None:
        shape = (num_layers, num_blocks, num_kv_heads, head_dim)
        self.key_min = torch.zeros(shape, dtype=dtype, device=device)
        self.key_max = torch.zeros(shape, dtype=dtype, device=device)

    @property
    def num_bytes(self) -> int:
        return 2 * self.key_min.numel() * self.key_min.element_size()

    def update(self, keys: torch.Tensor, block_ids: list[int], chunk_blocks: int = 64) -> None:
        """Summarise full blocks ``block_ids`` from ``keys`` [layers, blocks, kvH, B, D]."""
        for i in range(0, len(block_ids), chunk_blocks):
            ids = torch.tensor(block_ids[i : i + chunk_blocks], device=keys.device)
            k = keys.index_select(1, ids)  # [L, n, kvH, B, D]
            self.key_min.index_copy_(1, ids, k.amin(dim=3))
            self.key_max.index_copy_(1, ids, k.amax(dim=3))


def upper_bounds(q: torch.Tensor, key_min: torch.Tensor, key_max: torch.Tensor) -> torch.Tensor:
    """Quest bound per block and KV head: q [B, H, D], key_min/max [B, nb, kvH, D] ->
    [B, nb, kvH] (fp32), summed over the ``H // kvH`` query heads of each KV head."""
    B, H, D = q.shape
    kvh = key_min.shape[2]
    qg = q.view(B, 1, kvh, H // kvh, D).float()
    lo = qg * key_min[:, :, :, None, :].float()
    hi = qg * key_max[:, :, :, None, :].float()
    return torch.maximum(lo, hi).sum(dim=(-1, -2))


@dataclass(frozen=True)
class QuestDecode:
    """One step's decode group under Quest, used by every layer of that step's forward.

    ``table[b, j]`` is the physical block of logical block j of sequence b (padded with 0);
    blocks ``j < num_complete_blocks[b]`` are full and summarised; ``query_pos[b]`` is the
    query's position (its block ``query_pos // B`` is always attended). ``top_k_blocks[b]`` is
    sequence b's budget of complete blocks (the configured k for a decode step; all of them for
    a one-token prompt chunk, which stays dense); ``max_top_k_blocks`` is its maximum.
    """

    summaries: QuestSummaries
    table: torch.Tensor  # [B, max_blocks] int64
    num_complete_blocks: torch.Tensor  # [B] int64
    query_pos: torch.Tensor  # [B] int64
    top_k_blocks: torch.Tensor  # [B] int64
    max_top_k_blocks: int
    block_size_tokens: int

    def select(self, layer: int, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logical blocks each (sequence, KV head) attends: ``[B, k + 1, kvH]`` int64 in
        ascending order (current block last) and whether each entry is real."""
        B, nb = self.table.shape
        s = self.summaries
        flat = self.table.flatten()
        kmin = s.key_min[layer].index_select(0, flat).view(B, nb, *s.key_min.shape[2:])
        kmax = s.key_max[layer].index_select(0, flat).view(B, nb, *s.key_max.shape[2:])
        ub = upper_bounds(q, kmin, kmax)  # [B, nb, kvH]
        kvh = ub.shape[2]
        j = torch.arange(nb, device=q.device)
        selectable = (j[None, :] < self.num_complete_blocks[:, None])[:, :, None]
        ub = ub.masked_fill(~selectable, float("-inf"))
        k = min(self.max_top_k_blocks, nb)
        top = ub.topk(k, dim=1)  # ranked best first
        rank = torch.arange(k, device=q.device).view(1, k, 1)
        valid = (top.values > float("-inf")) & (rank < self.top_k_blocks.view(B, 1, 1))
        idx = torch.where(valid, top.indices, nb).sort(dim=1).values  # invalid ones last
        valid = idx < nb
        cur = (self.query_pos // self.block_size_tokens).view(B, 1, 1).expand(B, 1, kvh)
        idx = torch.cat([torch.where(valid, idx, 0), cur], dim=1)
        valid = torch.cat([valid, torch.ones_like(valid[:, :1])], dim=1)
        return idx, valid

    def gather(
        self, layer: int, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """K, V of the selected blocks ``[B, k + 1, kvH, B, D]`` and the mask
        ``[B, kvH, 1, (k + 1) * B]`` (True = attend) for ``q`` [B, H, D] at ``layer``."""
        _, kvh, bs, d = k_cache.shape
        idx, valid = self.select(layer, q)
        B, n, _ = idx.shape
        phys = self.table.gather(1, idx.view(B, n * kvh)).view(B, n, kvh)
        rows = (phys * kvh + torch.arange(kvh, device=q.device)).flatten()
        k = k_cache.view(-1, bs, d).index_select(0, rows).view(B, n, kvh, bs, d)
        v = v_cache.view(-1, bs, d).index_select(0, rows).view(B, n, kvh, bs, d)
        key_pos = idx[..., None] * bs + torch.arange(bs, device=q.device)  # [B, n, kvH, B]
        mask = (key_pos <= self.query_pos.view(B, 1, 1, 1)) & valid[..., None]
        return k, v, mask.permute(0, 2, 1, 3).reshape(B, kvh, 1, n * bs)
