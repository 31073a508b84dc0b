"""Markdown pieces of reports: pipe tables (pandas' ``to_markdown`` needs the optional
tabulate package) and one-cell renderings of plain values."""

from __future__ import annotations

import json


def scalar_text(v: object, digits: int = 6) -> str:
    """A value as one table cell: floats to ``digits`` significant digits, None as n/a,
    containers as compact JSON; pipes escaped."""
    if v is None:
        text = "n/a"
    elif isinstance(v, float):
        text = f"{v:.{digits}g}"
    elif isinstance(v, (list, tuple, dict)):
        text = json.dumps(v, default=str)
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(df, digits: int = 4) -> str:
    """A pandas DataFrame as a pipe table, floats with ``digits`` decimals."""

    def cell(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else scalar_text(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])
