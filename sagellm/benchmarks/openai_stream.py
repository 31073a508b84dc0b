"""Reading one streamed OpenAI completion (Server-Sent Events) into a :class:`RequestMetrics`.

Timing follows ``vllm bench serve`` (its OpenAI completions request function): the clock starts
just before the request is sent (``sent_s``, the request's ``arrival_s``); every ``data:`` chunk
that carries a choice is one *token chunk*, timestamped when its line arrives:

- TTFT = first token chunk - sent; ITL = gaps between consecutive token chunks;
- E2E ends at the last token chunk (``finished_s``), so TPOT = (e2e - ttft) / (output - 1);
- the output token count comes from the ``usage`` chunk (``stream_options.include_usage``),
  falling back to the number of token chunks when the server sends no usage.

A chunk whose choice has empty text *and* a ``finish_reason`` only closes the stream and is not
a token chunk (some servers send one after the last token; counting it would add a spurious
ITL). A token chunk with empty text (a token that decodes to nothing yet) counts, as in vLLM.
When a server packs several tokens into one chunk, ``token_times_s`` holds one time per chunk
and is shorter than ``num_output_tokens``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sagellm.core.types import RequestMetrics

DONE = "[DONE]"


@dataclass
class StreamTimer:
    """Consumes SSE lines of one streamed completion (``feed(line, now_s)``) and assembles its
    :class:`RequestMetrics` (``metrics()``). Times are seconds on the caller's clock."""

    request_id: str
    sent_s: float
    num_prompt_tokens: int  # what was sent; replaced by usage.prompt_tokens when reported
    token_times_s: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    usage_completion_tokens: int | None = None
    usage_prompt_tokens: int | None = None
    num_cached_tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    done: bool = False  # saw ``data: [DONE]``
    _data: list[str] = field(default_factory=list)  # data lines of the event being read

    def feed(self, line: str, now_s: float) -> None:
        """One line of the response body (without its newline), received at ``now_s``."""
        line = line.rstrip("\r")
        if not line:  # blank line: end of an event
            self._event(now_s)
        elif line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        # comments (":"), "event:", "id:" and "retry:" fields carry nothing we time

    def close(self, now_s: float) -> None:
        """The body ended; an event not closed by a blank line still counts."""
        self._event(now_s)

    def _event(self, now_s: float) -> None:
        if not self._data:
            return
        payload = "\n".join(self._data)
        self._data = []
        if payload.strip() == DONE:
            self.done = True
            return
        try:
            chunk = json.loads(payload)
        except json.JSONDecodeError:
            self.error = f"malformed SSE chunk: {payload[:200]!r}"
            return
        if not isinstance(chunk, dict):
            self.error = f"malformed SSE chunk: {payload[:200]!r}"
            return
        if "error" in chunk:
            err = chunk["error"]
            self.error = str(err.get("message", err) if isinstance(err, dict) else err)
            return
        self._choices(chunk.get("choices") or [], now_s)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage_completion_tokens = usage.get("completion_tokens")
            self.usage_prompt_tokens = usage.get("prompt_tokens")
            details = usage.get("prompt_tokens_details") or {}
            self.num_cached_tokens = int(details.get("cached_tokens") or 0)

    def _choices(self, choices: list, now_s: float) -> None:
        if not choices:
            return
        c = choices[0]
        # completions carry "text"; chat completions "delta.content"
        text = c.get("text")
        if text is None:
            text = (c.get("delta") or {}).get("content")
        reason = c.get("finish_reason")
        if reason is not None:
            self.finish_reason = reason
        if text or reason is None:
            self.token_times_s.append(now_s)
            self.text.append(text or "")

    def metrics(self) -> RequestMetrics:
        """The request's record. Failed (``finish_reason == "error"``, with ``error``) when a
        chunk reported an error, the stream produced no token, or it ended without a finish
        reason; otherwise "stop" or "length" as the server said."""
        n = self.usage_completion_tokens
        if n is None:
            n = len(self.token_times_s)
        error = self.error
        if error is None and not self.token_times_s:
            error = "the stream ended without a token"
        elif error is None and self.finish_reason is None:
            error = "the stream ended without a finish_reason"
        reason = self.finish_reason if self.finish_reason in ("stop", "length") else "stop"
        last = self.token_times_s[-1] if self.token_times_s else None
        return RequestMetrics(
            self.request_id,
            self.sent_s,
            self.usage_prompt_tokens or self.num_prompt_tokens,
            first_token_s=self.token_times_s[0] if self.token_times_s else None,
            token_times_s=list(self.token_times_s),
            finished_s=last,
            num_cached_tokens=self.num_cached_tokens,
            num_output_tokens=int(n) if error is None else len(self.token_times_s),
            finish_reason="error" if error is not None else reason,
            error=error,
        )


def failed_metrics(
    request_id: str, sent_s: float, num_prompt_tokens: int, now_s: float, error: str
) -> RequestMetrics:
    """The record of a request that failed before or while streaming (connection refused,
    HTTP error status, timeout): finish reason ``"error"`` with ``error``, no tokens."""
    return RequestMetrics(
        request_id,
        sent_s,
        num_prompt_tokens,
        finished_s=now_s,
        finish_reason="error",
        error=error,
    )
