"""The final number of a math answer (GSM8K style), to compare answers across runs."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in ``text``, commas removed and a zero fraction dropped ("1,200.00" ->
    "1200"); None when the text holds no number."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    s = found[-1].replace(",", "")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s
