"""The ``sagellm`` command: generate, demo, bench, gate, report, sweep, serve."""

from __future__ import annotations

import sys

from sagellm.cli.parser import build_parser
from sagellm.core.errors import SageLLMError

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SageLLMError, ValueError) as err:
        print(f"sagellm {args.cmd}: error: {err}", file=sys.stderr)
        return 2
