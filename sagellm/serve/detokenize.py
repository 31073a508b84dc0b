"""Incremental detokenization: text deltas whose concatenation equals decoding all tokens."""

from __future__ import annotations

from sagellm.engines.native.tokenizer import Tokenizer


class IncrementalDecoder:
    """Decodes the whole output each time and emits the new suffix; a trailing U+FFFD (half of
    a multi-byte character) is held back until the next token completes it. Quadratic in the
    output length, which is fine at serving lengths this CPU engine runs."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.token_ids: list[int] = []
        self.emitted = ""

    def push(self, new_token_ids: list[int], final: bool = False) -> str:
        """Append tokens; return the text not emitted before (all of it when ``final``)."""
        self.token_ids.extend(new_token_ids)
        text = self.tokenizer.decode(self.token_ids)
        if not final and text.endswith("\ufffd"):
            return ""
        if not text.startswith(self.emitted):  # a merge changed earlier text: emit nothing
            return ""
        delta = text[len(self.emitted) :]
        self.emitted = text
        return delta
