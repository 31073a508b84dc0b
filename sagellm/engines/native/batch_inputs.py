"""Turns a scheduled batch into the flat tensors one forward needs."""

from __future__ import annotations

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
    # scored prompts (``Sequence.score_from_tokens``): (sequence, first position) of rows
    # appended to ``logits_index`` after the sampled rows, one per consecutive position
    scored: list[tuple[Sequence, int, int]]  # (sequence, first position, number of rows)
    num_prefill_tokens: int
    num_decode_tokens: int
    attended_tokens: int  # sum over new tokens of the keys each attends to (for FLOPs)


def build_inputs(
    items: list[tuple[Sequence, int]], block_size: int, num_kv_heads: int, device: torch.device
) -> BatchInputs:
    """``items``: ``(sequence, new tokens)`` in flat-token order; each sequence's chunk starts
    at its ``num_computed_tokens`` and its blocks are allocated."""
    ids: list[int] = []
    pos: list[int] = []
    slot_block: list[int] = []
    logits_rows: list[int] = []
    sampled: list[Sequence] = []
    groups: dict[bool, tuple[list, list, list, list]] = {
        True: ([], [], [], []),
        False: ([], [], [], []),
    }
    scored: list[tuple[Sequence, int, int]] = []
    starts: dict[int, int] = {}  # id(sequence) -> its first row in the flat batch
    attended = 0
    num_prefill = 0
    for seq, n in items:
        start = starts[id(seq)] = len(ids)
        c = seq.num_computed_tokens
        ids.extend(seq.token_ids[c : c + n])
        pos.extend(range(c, c + n))
        bt = seq.block_ids
        slot_block.extend(bt[p // block_size] for p in range(c, c + n))
        g = groups[n == 1]
        g[0].append(start)
        g[1].append(n)
        g[2].append(c)
        g[3].append(bt)
        attended += n * c + n * (n + 1) // 2
        if n > 1:
            num_prefill += n
        if c + n == len(seq.token_ids):
            logits_rows.append(start + n - 1)
            sampled.append(seq)
        if seq.score_from_tokens is not None and c + n > seq.score_from_tokens:
            first = max(c, seq.score_from_tokens)
            scored.append((seq, first, c + n - first))
    for seq, first, k in scored:  # the scored rows follow the sampled ones
        row0 = starts[id(seq)] + first - seq.num_computed_tokens
        logits_rows.extend(range(row0, row0 + k))
    positions = torch.tensor(pos, dtype=torch.int64, device=device)
    blocks = torch.tensor(slot_block, dtype=torch.int64, device=device)
    heads = torch.arange(num_kv_heads, dtype=torch.int64, device=device)
    # cache row of (token t, head h) in a [blocks, kvH, bs, D] cache viewed as [-1, D]
    kv_rows = (blocks[:, None] * num_kv_heads + heads) * block_size + (positions % block_size)[
        :, None
    ]
    meta = AttnMetadata(
        kv_rows=kv_rows.flatten(),
        groups=tuple(
            build_group(*g, block_size=block_size, device=device) for g in groups.values() if g[0]
        ),
    )
    return BatchInputs(
        input_ids=torch.tensor(ids, dtype=torch.int64, device=device),
        positions=positions,
        meta=meta,
        logits_index=torch.tensor(logits_rows, dtype=torch.int64, device=device),
        sampled_seqs=sampled,
        scored=scored,
        num_prefill_tokens=num_prefill,
        num_decode_tokens=len(ids) - num_prefill,
        attended_tokens=attended,
    )
