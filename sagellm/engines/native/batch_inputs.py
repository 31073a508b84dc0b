"""Turns a scheduled batch into the flat tensors one forward needs.

A sequence's chunk is ``token_ids[c : c + n]`` at positions ``c..c+n-1`` (``c`` its computed
tokens), except a *verify* chunk (its request id in ``drafts``): the pending token(s) of
``token_ids`` followed by the draft tokens, which are not part of ``token_ids``; logits are
taken at every position of a verify chunk (row ``i`` scores draft ``i``). A plain chunk that
ends at the sequence's last token gets the logits of its last position, or of all its
positions with ``all_logits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from sagellm.engines.native.attention import AttnMetadata, build_group
from sagellm.engines.native.sequence import Sequence


@dataclass(frozen=True)
class BatchInputs:
    input_ids: torch.Tensor  # [T]
    positions: torch.Tensor  # [T]
    meta: AttnMetadata
    logits_index: torch.Tensor  # rows of the flat batch whose logits are sampled
    sampled_seqs: list[Sequence]  # the sequences those rows belong to, same order
    num_logits: list[int]  # rows of logits_index per sampled sequence (consecutive), same order
    # scored prompts (``Sequence.score_from_tokens``): (sequence, first position) of rows
    # appended to ``logits_index`` after the sampled rows, one per consecutive position
    scored: list[tuple[Sequence, int, int]]  # (sequence, first position, number of rows)
    num_prefill_tokens: int
    num_decode_tokens: int  # decodes and verify chunks (pending token + drafts)
    attended_tokens: int  # sum over new tokens of the keys each attends to (for FLOPs)
    # the batch as plain lists, what a TP worker rank needs to rebuild input_ids, positions and
    # meta for its own KV heads (``wire_tensors``): (ids, positions, slot blocks, groups)
    wire: tuple[list[int], list[int], list[int], list[tuple[list, list, list, list]]] | None = None


def kv_rows_of(
    positions: torch.Tensor, blocks: torch.Tensor, num_kv_heads: int, block_size: int
) -> torch.Tensor:
    """Cache row of (token t, head h) in a [blocks, kvH, bs, D] cache viewed as [-1, D],
    flattened token-major: ``[T * kvH]``."""
    heads = torch.arange(num_kv_heads, dtype=torch.int64, device=positions.device)
    rows = (blocks[:, None] * num_kv_heads + heads) * block_size + (positions % block_size)[:, None]
    return rows.flatten()


# up to this many tokens a step's K/V rows are computed in Python (one tensor made): the five
# torch ops of ``kv_rows_of`` cost ~0.15 ms at batch 1 with the caches cold after the weights
LIST_KV_ROWS_MAX_TOKENS = 64


def kv_rows_from_lists(
    pos: list[int], slot_block: list[int], num_kv_heads: int, block_size: int, device
) -> torch.Tensor:
    """:func:`kv_rows_of` for token positions and blocks given as lists (computed in
    Python: for steps of up to ``LIST_KV_ROWS_MAX_TOKENS`` tokens)."""
    rows = [
        (b * num_kv_heads + h) * block_size + p % block_size
        for b, p in zip(slot_block, pos, strict=True)
        for h in range(num_kv_heads)
    ]
    return torch.tensor(rows, dtype=torch.int64, device=device)


def wire_tensors(wire, num_kv_heads: int, block_size: int, device: torch.device):
    """``(input_ids, positions, meta)`` of a batch's ``wire`` form for a rank holding
    ``num_kv_heads`` KV heads (dense attention; sparse attention is refused with TP)."""
    ids, pos, slot_block, groups = wire
    positions = torch.tensor(pos, dtype=torch.int64, device=device)
    blocks = torch.tensor(slot_block, dtype=torch.int64, device=device)
    meta = AttnMetadata(
        kv_rows=kv_rows_of(positions, blocks, num_kv_heads, block_size),
        groups=tuple(build_group(*g, block_size=block_size, device=device) for g in groups),
    )
    return torch.tensor(ids, dtype=torch.int64, device=device), positions, meta


def build_inputs(
    items: list[tuple[Sequence, int]],
    block_size: int,
    num_kv_heads: int,
    device: torch.device,
    drafts: Mapping[str, Seq[int]] | None = None,
    all_logits: bool = False,
    sparse=None,
    wire: bool = False,
) -> BatchInputs:
    """``items``: ``(sequence, new tokens)`` in flat-token order; each sequence's chunk starts
    at its ``num_computed_tokens`` and its blocks are allocated (for a verify chunk ``n``
    counts its drafts too). ``sparse``: the engine's sparse-attention hook (``sparse_hook``),
    which builds the attention groups when set. ``wire``: also keep the plain-list form (TP)."""
    drafts = drafts or {}
    ids: list[int] = []
    pos: list[int] = []
    slot_block: list[int] = []
    logits_rows: list[int] = []
    sampled: list[Sequence] = []
    num_logits: list[int] = []
    # one attention group per bucket of chunk lengths (1, 2-3, 4-7, ..., 64-127, ...): a group
    # pads every sequence to its longest chunk, so a 128-token chunk beside 64-token ones
    # would double the others' attention work
    groups: dict[int, tuple[list, list, list, list, list]] = {}
    scored: list[tuple[Sequence, int, int]] = []
    starts: dict[int, int] = {}  # id(sequence) -> its first row in the flat batch
    attended = 0
    num_prefill = 0
    for seq, n in items:
        start = starts[id(seq)] = len(ids)
        c = seq.num_computed_tokens
        d = list(drafts.get(seq.request_id, ()))
        ids.extend(seq.token_ids[c : c + n - len(d)])
        ids.extend(d)
        pos.extend(range(c, c + n))
        bt = seq.block_ids
        slot_block.extend(bt[p // block_size] for p in range(c, c + n))
        g = groups.setdefault(n.bit_length(), ([], [], [], [], []))
        g[0].append(start)
        g[1].append(n)
        g[2].append(c)
        g[3].append(bt)
        g[4].append(seq)
        attended += n * c + n * (n + 1) // 2
        if n > 1 and not d:
            num_prefill += n
        if c + n - len(d) == len(seq.token_ids):
            k = n if d or all_logits else 1
            logits_rows.extend(range(start + n - k, start + n))
            sampled.append(seq)
            num_logits.append(k)
        if seq.score_from_tokens is not None and c + n > seq.score_from_tokens:
            first = max(c, seq.score_from_tokens)
            scored.append((seq, first, c + n - first))
    for seq, first, k in scored:  # the scored rows follow the sampled ones
        row0 = starts[id(seq)] + first - seq.num_computed_tokens
        logits_rows.extend(range(row0, row0 + k))
    positions = torch.tensor(pos, dtype=torch.int64, device=device)
    if len(pos) <= LIST_KV_ROWS_MAX_TOKENS:
        kv_rows = kv_rows_from_lists(pos, slot_block, num_kv_heads, block_size, device)
    else:
        blocks = torch.tensor(slot_block, dtype=torch.int64, device=device)
        kv_rows = kv_rows_of(positions, blocks, num_kv_heads, block_size)
    meta = AttnMetadata(
        kv_rows=kv_rows,
        groups=tuple(
            build_group(*g[:4], block_size=block_size, device=device)
            if sparse is None
            else sparse.build_group(g[4], *g[:4], block_size=block_size, device=device)
            for g in groups.values()
            if g[0]
        ),
    )
    return BatchInputs(
        input_ids=torch.tensor(ids, dtype=torch.int64, device=device),
        positions=positions,
        meta=meta,
        logits_index=torch.tensor(logits_rows, dtype=torch.int64, device=device),
        sampled_seqs=sampled,
        num_logits=num_logits,
        scored=scored,
        num_prefill_tokens=num_prefill,
        num_decode_tokens=len(ids) - num_prefill,
        attended_tokens=attended,
        wire=(ids, pos, slot_block, [g[:4] for g in groups.values() if g[0]]) if wire else None,
    )
