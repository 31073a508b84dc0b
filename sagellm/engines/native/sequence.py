"""Per-request state inside the native engine."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from sagellm.accel.speculative import Draft
from sagellm.core.types import BlockId, FinishReason, Request, RequestMetrics


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """A request plus its tokens, KV blocks and progress.

    Invariants: ``num_computed_tokens <= len(token_ids)``; the KV of ``token_ids[:num_computed]``
    is in ``block_ids`` (``len(block_ids) * block_size >= num_computed_tokens``). On preemption
    by recompute ``num_computed_tokens`` drops to 0 and the blocks are freed; tokens are kept.
    Under StreamingLLM a block no later query reads is freed early and its slot in
    ``block_ids`` becomes ``None`` (``len(block_ids)`` stays the logical table length).
    """

    request: Request
    token_ids: list[int]
    num_prompt_tokens: int
    metrics: RequestMetrics
    generator: torch.Generator | None
    block_ids: list[BlockId | None] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: SeqStatus = SeqStatus.WAITING
    finish_reason: FinishReason | None = None
    max_len_tokens: int = 0  # stop when len(token_ids) reaches this (context limit)
    # chained prefix-index hashes of the first full blocks of token_ids (tenant-salted), grown
    # as blocks complete: each block is hashed once in the sequence's life
    block_hashes: list[int] = field(default_factory=list)
    # speculative decoding: this step's proposed tokens (not in token_ids, never indexed);
    # set when the plan is made, consumed by the verify sample, cleared after every step
    draft: Draft | None = None
    # prompt scoring (``NativeEngine.prompt_logits``): the fp32 logits of every position from
    # this one on are kept by position; the prefix cache may supply only tokens before it
    score_from_tokens: int | None = None
    scored_logits: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_pending_tokens(self) -> int:
        """Tokens whose KV is not computed yet (1 for a decoding sequence)."""
        return len(self.token_ids) - self.num_computed_tokens
