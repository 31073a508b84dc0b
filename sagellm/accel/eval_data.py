"""The fixed evaluation data of accuracy measurements (never downloaded).

The files live outside the repository, in ``<repo>/../shared/data/eval/`` (see its README), or in
the folder named by the environment variable ``SAGELLM_EVAL_DIR``:

- ``tinyshakespeare.txt``: plain text for perplexity (1,115,394 bytes);
- ``gsm8k_test.jsonl``: 1,319 math word problems, one JSON object per line with ``question`` and
  ``answer`` (the worked answer; the final number follows ``#### ``).

A missing folder or file raises :class:`EvalDataMissingError` naming the path and the variable;
tests call :func:`eval_data_available` and skip with that reason.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sagellm.core.errors import SageLLMError

ENV_VAR = "SAGELLM_EVAL_DIR"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
GSM8K_FILE = "gsm8k_test.jsonl"


class EvalDataMissingError(SageLLMError):
    """The evaluation folder or one of its files is not there."""


@dataclass(frozen=True)
class GSM8KProblem:
    index: int  # line number in gsm8k_test.jsonl, from 0
    question: str
    answer: str  # the worked answer text
    final_answer: str  # the number after "#### ", commas removed


def eval_data_dir() -> Path:
    """The evaluation folder: ``$SAGELLM_EVAL_DIR`` or ``<repo>/../shared/data/eval``."""
    env = os.environ.get(ENV_VAR)
    d = Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data" / "eval"
    if not d.is_dir():
        raise EvalDataMissingError(
            f"evaluation data folder {d} does not exist; set {ENV_VAR} to the folder holding "
            f"{SHAKESPEARE_FILE} and {GSM8K_FILE}"
        )
    return d


def _file(name: str) -> Path:
    p = eval_data_dir() / name
    if not p.is_file():
        raise EvalDataMissingError(f"evaluation file {p} is missing (set {ENV_VAR})")
    return p


def eval_data_available() -> tuple[bool, str]:
    """(True, "") when both files are present, else (False, the reason)."""
    try:
        _file(SHAKESPEARE_FILE)
        _file(GSM8K_FILE)
    except EvalDataMissingError as err:
        return False, str(err)
    return True, ""


def shakespeare_text() -> str:
    return _file(SHAKESPEARE_FILE).read_text(encoding="utf-8")


def gsm8k_problems(limit: int | None = None) -> list[GSM8KProblem]:
    """The first ``limit`` problems (all when None), in file order."""
    out: list[GSM8KProblem] = []
    with _file(GSM8K_FILE).open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if limit is not None and i >= limit:
                break
            row = json.loads(line)
            final = row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
            out.append(GSM8KProblem(i, row["question"], row["answer"], final))
    return out
