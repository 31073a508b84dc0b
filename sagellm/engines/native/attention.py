"""Paged attention over the block-table KV cache, batched per group of sequences.

A step's sequences are split into groups by chunk length (decodes of 1 query token; chunks of
2-3, 4-7, ... tokens: ``batch_inputs``) so padding stays small. For each group the K/V blocks
of every sequence are gathered with one ``index_select`` into a reused workspace (fresh
multi-MB tensors cost page faults on every step on CPU), then:

- decode: scores are one broadcast matmul per block, ``q [B,1,kvH,G,D] @ K [B,nb,kvH,D,bs]``,
  softmax over all of a sequence's keys, and ``P @ V`` summed over blocks; no GQA copies.
- prefill: K/V are laid out as ``[B, kvH, L, D]``; fp32 on AVX-512 CPUs and bf16 on
  AVX512-BF16 ones go to the C++ kernel with per-query causal key limits (``attention_folded``),
  otherwise SDPA with a causal-and-length mask (fresh prompts: SDPA's own ``is_causal``).
- prefill groups sharing a long cached prefix: the prefix once for all queries, merged with
  each sequence's own keys (``attention_cascade``).

Masks keep every query to keys at positions <= its own inside its own sequence.

On CPU, groups of short queries (decode, verify, chunks of at most ``KERNEL_MAX_Q`` tokens) skip
the gather: the C++ kernel (``csrc/paged_attention.cpp``) reads each K/V row from its block in
place, once per (sequence, kv head) for all query heads of that group. It computes plain causal
attention over the whole table, so sparse groups and an int8 cache take the torch path.

Sparse attention (``sagellm.accel.sparse``, applied by ``sparse_hook``) enters through two
seams: ``build_group``'s ``block_positions``/``key_mask`` (a table holding only some logical
blocks, and a narrower token mask: StreamingLLM) and ``AttnGroup.sparse`` (a decode group
whose K/V blocks are chosen per layer from the query: Quest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from sagellm.engines.native import attention_cascade as cascade
from sagellm.engines.native import attention_folded as folded
from sagellm.engines.native.attention_cascade import shared_prefix_blocks
from sagellm.engines.native.kernels import paged_attention_op
from sagellm.engines.native.kv_cache import dequantize_kv


@dataclass(frozen=True)
class AttnGroup:
    """Index tensors of one group of sequences (all on the model's device).

    ``token_index[b, i]`` is the flat token row of query i of sequence b (0 on padding);
    ``valid[b, i]`` marks real queries; ``flat_index == token_index[valid]``. Those, ``mask``
    and ``key_limits`` serve the torch attention paths and are built on first use (cached):
    the C++ kernel reads only the block tables and the per-sequence counts, and a decode step
    on CPU spent ~0.2 ms (1 sequence, cold caches after the weight stream) building them.
    """

    block_ids: torch.Tensor  # [B * max_blocks] int64, block tables padded with block 0
    q_starts: torch.Tensor  # [B] int64: flat row of each sequence's first query
    q_lens: torch.Tensor  # [B] int64: queries of each sequence
    num_computed: torch.Tensor  # [B] int64: tokens of each sequence before its first query
    num_seqs: int
    max_q: int
    max_blocks: int
    block_size: int  # tokens per block
    causal_only: bool = True  # plain causal mask over the whole table (no sparse pattern)
    # causal_only and no sequence has earlier tokens: query i sees keys 0..i of its own row,
    # SDPA's ``is_causal`` mask, whose blocks above the diagonal it skips
    fresh_prompts: bool = False
    # decode only: picks each layer's K/V blocks from the query (``QuestDecode.gather``)
    sparse: object | None = None
    # leading table entries all sequences share, before every query (``attention_cascade``)
    shared_blocks: int = 0
    # build_group's sparse arguments, kept for ``mask``
    block_positions: list[list[int]] | None = None
    key_mask: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    @cached_property
    def _queries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(token_index, valid, q_pos)`` [B, max_q]; padded queries sit at position 0 (they
        see key 0 only: no NaN rows)."""
        ar = torch.arange(self.max_q, dtype=torch.int64, device=self.block_ids.device)[None, :]
        valid = ar < self.q_lens[:, None]
        token_index = torch.where(valid, self.q_starts[:, None] + ar, 0)
        q_pos = torch.where(valid, self.num_computed[:, None] + ar, 0)
        return token_index, valid, q_pos

    @cached_property
    def token_index(self) -> torch.Tensor:  # [B, max_q] int64
        return self._queries[0]

    @cached_property
    def valid(self) -> torch.Tensor:  # [B, max_q] bool
        return self._queries[1]

    @cached_property
    def flat_index(self) -> torch.Tensor:  # [num_valid] int64
        token_index, valid, _ = self._queries
        return token_index[valid]

    @cached_property
    def mask(self) -> torch.Tensor:
        """[B, 1, max_q, max_blocks * block_size] bool, True = attend."""
        _, valid, q_pos = self._queries
        bs, dev = self.block_size, self.block_ids.device
        k_pos = torch.arange(self.max_blocks * bs, dtype=torch.int64, device=dev)[None, None, :]
        if self.block_positions is not None:  # padding blocks sit past every query
            past = q_pos.max().item() + 1
            pad = [row + [past] * (self.max_blocks - len(row)) for row in self.block_positions]
            slot = torch.arange(bs, dtype=torch.int64, device=dev)
            k_pos = (torch.tensor(pad, device=dev)[:, :, None] * bs + slot).view(len(pad), 1, -1)
        mask = k_pos <= q_pos[:, :, None]
        if self.key_mask is not None:
            mask = (mask & self.key_mask(k_pos, q_pos[:, :, None])) | ~valid[:, :, None]
        return mask[:, None]

    @cached_property
    def key_limits(self) -> torch.Tensor | None:
        """[B, max_q] int64: keys each query sees under the causal mask (1 for padding); groups
        of several queries only (``_prefill``, ``_cascade``), None for decode groups."""
        return self._queries[2] + 1 if self.max_q > 1 else None


@dataclass(frozen=True)
class AttnMetadata:
    kv_rows: torch.Tensor  # [T * kvH] int64 row of each new (token, kv head) in cache.view(-1, D)
    groups: tuple[AttnGroup, ...]


def build_group(
    starts: list[int],
    q_lens: list[int],
    num_computed: list[int],
    block_tables: list[list[int]],
    block_size: int,
    device: torch.device,
    block_positions: list[list[int]] | None = None,
    key_mask: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> AttnGroup:
    """Index tensors for sequences whose new tokens sit at flat rows starts[b]..+q_lens[b].

    ``block_positions[b][j]``: the logical block index of ``block_tables[b][j]`` (default j);
    ``key_mask(key_pos, query_pos)``: further restricts the causal mask (broadcast positions).
    """
    max_q = max(q_lens)
    max_blocks = max(len(bt) for bt in block_tables)
    flat_bt = [0] * (len(block_tables) * max_blocks)
    for i, row in enumerate(block_tables):
        flat_bt[i * max_blocks : i * max_blocks + len(row)] = row
    causal_only = block_positions is None and key_mask is None
    shared = 0
    if causal_only and max_q > KERNEL_MAX_Q:
        shared = shared_prefix_blocks(block_tables, num_computed, block_size)
    return AttnGroup(
        block_ids=torch.tensor(flat_bt, dtype=torch.int64, device=device),
        q_starts=torch.tensor(starts, dtype=torch.int64, device=device),
        q_lens=torch.tensor(q_lens, dtype=torch.int64, device=device),
        num_computed=torch.tensor(num_computed, dtype=torch.int64, device=device),
        num_seqs=len(starts),
        max_q=max_q,
        max_blocks=max_blocks,
        block_size=block_size,
        causal_only=causal_only,
        fresh_prompts=causal_only and not any(num_computed),
        shared_blocks=shared,
        block_positions=block_positions,
        key_mask=key_mask,
    )


class Workspace:
    """Reused gather buffers, grown on demand (one pair per model, shared by all layers)."""

    def __init__(self) -> None:
        self._buf: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        n = 1
        for s in shape:
            n *= s
        b = self._buf.get(name)
        if b is None or b.numel() < n or b.dtype != like.dtype or b.device != like.device:
            b = torch.empty(
                max(n, 2 * (b.numel() if b is not None else 0)),
                dtype=like.dtype,
                device=like.device,
            )
            self._buf[name] = b
        return b[:n].view(shape)


def _gather(
    cache: torch.Tensor,
    block_ids: torch.Tensor,
    num_seqs: int,
    ws: Workspace,
    name: str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Blocks ``block_ids`` (``num_seqs`` equal rows, flat) -> [B, nb, kvH, bs, D] in
    ``dtype`` (a workspace view, or a fresh tensor dequantized from an int8 cache)."""
    _, kvh, bs, d = cache.shape
    out = ws.get(name, (block_ids.shape[0], kvh, bs, d), cache)
    torch.index_select(cache, 0, block_ids, out=out)
    if cache.dtype != dtype:
        out = dequantize_kv(out, dtype)
    return out.view(num_seqs, -1, kvh, bs, out.shape[-1])


def _by_seq(k: torch.Tensor) -> torch.Tensor:
    """[B, nb, kvH, bs, D] -> [B, kvH, nb * bs, D] (SDPA's layout)."""
    B, nb, kvh, bs, d = k.shape
    return k.permute(0, 2, 1, 3, 4).reshape(B, kvh, nb * bs, d)


def _decode(q, k, v, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """``mask``: [B, 1 or kvH, 1, nb * bs] (per KV head when the blocks differ per head)."""
    B, nb, kvh, bs, d = k.shape
    grp = q.shape[1] // kvh
    s = torch.matmul(q.view(B, 1, kvh, grp, d), k.transpose(-1, -2))  # [B,nb,kvH,G,bs]
    s = s.permute(0, 2, 3, 1, 4).reshape(B, kvh, grp, nb * bs).float() * scale
    s = s.masked_fill(~mask.view(B, -1, 1, nb * bs), float("-inf"))
    p = s.softmax(-1).to(q.dtype).view(B, kvh, grp, nb, bs).permute(0, 3, 1, 2, 4)
    return torch.matmul(p, v).sum(1).view(B, kvh * grp, d)  # [B, H, D]


def _prefill(q, k, v, g: AttnGroup, scale: float) -> torch.Tensor:
    k, v = _by_seq(k), _by_seq(v)
    qg = q[g.token_index].transpose(1, 2)  # [B, H, max_q, D]
    gqa = k.shape[1] != qg.shape[1]
    if g.causal_only and folded.available(q):
        o, _ = folded.attend(qg, k, v, g.key_limits, scale)
    elif g.fresh_prompts:  # padded queries see padding keys too; their rows are dropped below
        o = F.scaled_dot_product_attention(qg, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        o = F.scaled_dot_product_attention(qg, k, v, attn_mask=g.mask, scale=scale, enable_gqa=gqa)
    return o.transpose(1, 2)[g.valid]


def _cascade(q, k_cache, v_cache, g: AttnGroup, scale: float, ws: Workspace) -> torch.Tensor:
    """A prefill group whose sequences share their first ``g.shared_blocks`` blocks: the
    prefix attended once for all queries, merged with each sequence's own keys."""
    p = g.shared_blocks
    ids = g.block_ids.view(g.num_seqs, g.max_blocks)
    kp = _by_seq(_gather(k_cache, ids[0, :p], 1, ws, "kp", q.dtype))[0]
    vp = _by_seq(_gather(v_cache, ids[0, :p], 1, ws, "vp", q.dtype))[0]
    o_p, lse_p = cascade.prefix_part(q[g.flat_index], kp, vp, scale)
    rest = ids[:, p:].reshape(-1)
    ks = _by_seq(_gather(k_cache, rest, g.num_seqs, ws, "k", q.dtype))
    vs = _by_seq(_gather(v_cache, rest, g.num_seqs, ws, "v", q.dtype))
    qg = q[g.token_index].transpose(1, 2)
    mask = g.mask[..., p * k_cache.shape[2] :]
    limits = (g.key_limits - p * k_cache.shape[2]).clamp_(min=1)
    o_s, lse_s = cascade.suffix_part(qg, ks, vs, mask, limits, g.valid, scale)
    return cascade.merge(o_p, lse_p, o_s, lse_s)


#: Groups with at most this many queries per sequence (decode, speculative verify, short chunks)
#: run the in-place C++ kernel when it is loaded; longer prefills are GEMM-bound and go to SDPA.
KERNEL_MAX_Q = 16


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttnMetadata,
    scale: float,
    ws: Workspace,
    layer: int = 0,
) -> torch.Tensor:
    """Attention of new queries ``q`` [T, H, D] over the paged cache (new K/V already written).

    Returns [T, H, D]. The cache views are [num_blocks, kv_heads, block_size, D] (an int8
    cache: D + 4 columns, see ``kv_cache``); ``layer`` is the layer index (a sparse decode group
    selects blocks per layer).
    """
    op = paged_attention_op() if q.device.type == "cpu" else None
    if op is not None:
        q = q.contiguous()  # the transposed-GEMM path leaves q column-major
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    for g in meta.groups:
        if g.sparse is not None:
            qd = q[g.flat_index]
            k, v, mask = g.sparse.gather(layer, qd, k_cache, v_cache)
            out[g.flat_index] = _decode(qd, k, v, mask, scale)
            continue
        dense = g.causal_only and k_cache.dtype == q.dtype
        if op is not None and dense and g.max_q <= KERNEL_MAX_Q:
            op(
                q,
                k_cache,
                v_cache,
                g.block_ids,
                g.q_starts,
                g.q_lens,
                g.num_computed,
                g.max_blocks,
                scale,
                out,
            )
            continue  # an int8 cache (dtype differs) is dequantized by the gather below
        if g.shared_blocks and dense and q.device.type == "cpu":
            out[g.flat_index] = _cascade(q, k_cache, v_cache, g, scale, ws)
            continue
        k = _gather(k_cache, g.block_ids, g.num_seqs, ws, "k", q.dtype)
        v = _gather(v_cache, g.block_ids, g.num_seqs, ws, "v", q.dtype)
        if g.max_q == 1:
            out[g.flat_index] = _decode(q[g.flat_index], k, v, g.mask, scale)
        else:
            out[g.flat_index] = _prefill(q, k, v, g, scale)
    return out
