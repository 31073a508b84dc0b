"""Mooncake-format request traces (FAST'25 release): one JSON object per line,

    {"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [...]}

Each hash id stands for one ``block_size_tokens``-token block of the prompt (512 in the
release); equal ids mean equal token content. A malformed line raises ``TraceFormatError``
naming its line number, or, with ``skip_bad=True``, is skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sagellm.core.errors import SageLLMError

MOONCAKE_BLOCK_TOKENS = 512


class TraceFormatError(SageLLMError, ValueError):
    """A trace line is malformed; the message starts with ``<file>:<line>``."""


@dataclass(frozen=True)
class TraceRecord:
    """One request of a trace. Invariant: len(hash_ids) == ceil(input_length / block size)
    is *not* enforced (the release has a few short tails); consumers use both."""

    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True)
class Trace:
    records: list[TraceRecord]
    num_bad_lines: int  # lines skipped with skip_bad=True
    source: str


def _parse(obj: object) -> TraceRecord:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    for key in ("timestamp", "input_length", "output_length", "hash_ids"):
        if key not in obj:
            raise ValueError(f"missing field {key!r}")
    ts, n_in, n_out, ids = (
        obj["timestamp"],
        obj["input_length"],
        obj["output_length"],
        obj["hash_ids"],
    )
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts < 0:
        raise ValueError(f"timestamp must be a number >= 0, got {ts!r}")
    for name, v in (("input_length", n_in), ("output_length", n_out)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
    if not isinstance(ids, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in ids
    ):
        raise ValueError("hash_ids must be a list of integers")
    return TraceRecord(float(ts), n_in, n_out, tuple(ids))


def read_mooncake_trace(
    path: str | Path, skip_bad: bool = False, max_records: int | None = None
) -> Trace:
    """Parse a Mooncake JSONL trace (blank lines are ignored)."""
    p = Path(path)
    records: list[TraceRecord] = []
    bad = 0
    try:
        fh = p.open()
    except OSError as err:
        raise TraceFormatError(f"{p}: cannot open trace: {err}") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(_parse(json.loads(line)))
            except ValueError as err:  # json.JSONDecodeError is a ValueError
                if not skip_bad:
                    raise TraceFormatError(f"{p}:{lineno}: {err}") from None
                bad += 1
            if max_records is not None and len(records) >= max_records:
                break
    return Trace(records, bad, str(p))
