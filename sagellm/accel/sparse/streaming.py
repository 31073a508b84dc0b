"""StreamingLLM (Xiao et al., 2023, "Efficient Streaming Language Models with Attention Sinks")
over the paged KV cache: every query attends to the first ``sink_tokens`` keys of its sequence
(the attention sinks) and to the ``window_tokens`` most recent keys, itself included.

Token-exact pattern: query at position ``q`` attends key ``k`` iff ``k <= q`` and
(``k < sink_tokens`` or ``k > q - window_tokens``). The same rule holds for prefill chunks and
decode steps, so output does not depend on how a prompt is chunked.

Freed blocks: once ``num_computed_tokens`` tokens are computed, every later query has position
``>= num_computed_tokens`` and so never reads a key ``<= num_computed_tokens - window_tokens``
again. A block (``block_size_tokens`` keys ``[j*B, (j+1)*B)``) entirely past the sinks and
entirely below that bound is dead: the engine gives it back to the pool. Live blocks of a
sequence therefore stay at most ``ceil(sinks/B) + ceil(window/B) + 1`` (plus the blocks of the
chunk being computed).

Positions: RoPE is applied when K is written (``model.py``), with each token's absolute
position; kept keys keep them. Relative distances a query sees are the true ones (sinks sit
far away in long contexts), unlike the paper's rolling cache positions, which re-rotate keys
by cache slot. So this saves memory and attention work but does not extend the context: a
sequence still ends at the model length, and up to it every distance is one the model saw in
training. Accuracy cost: everything between the sinks and the window is invisible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StreamingPattern:
    """Sinks + sliding window; ``window_tokens > sink_tokens >= 0`` (checked by AccelConfig)."""

    sink_tokens: int
    window_tokens: int

    def __post_init__(self) -> None:
        if self.sink_tokens < 0:
            raise ValueError(f"sink_tokens must be >= 0 (got {self.sink_tokens})")
        if self.window_tokens <= self.sink_tokens:
            raise ValueError(
                f"window_tokens ({self.window_tokens}) must be > sink_tokens ({self.sink_tokens})"
            )

    def key_mask(self, key_pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        """True where a query attends a key (broadcasting positions; causality included)."""
        near = key_pos > query_pos - self.window_tokens
        return (key_pos <= query_pos) & ((key_pos < self.sink_tokens) | near)

    def dead_blocks(
        self, num_computed_tokens: int, block_size_tokens: int, first_block: int = 0
    ) -> range:
        """Logical block indices no query at position >= ``num_computed_tokens`` reads,
        from ``first_block`` on (blocks below it were handled before)."""
        bs = block_size_tokens
        lo = max(first_block, -(-self.sink_tokens // bs))  # first block holding no sink
        hi = (num_computed_tokens - self.window_tokens + 1) // bs  # blocks ending <= bound
        return range(lo, max(lo, hi))

    def max_live_blocks(self, block_size_tokens: int) -> int:
        """Blocks a decoding sequence holds at most after each step (chunk blocks aside)."""
        bs = block_size_tokens
        return -(-self.sink_tokens // bs) + -(-self.window_tokens // bs) + 1
