"""The one Markdown table formatter of the package: what `mridpm evaluate` and `mridpm evaluate-tasks`
print, so that every table reads and pastes the same way."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str] | Sequence[str] | None = None,
                   formats: Mapping[str, str] | None = None) -> str:
    """rows as a Markdown table, one line per row. columns: {key: header} in order, or keys headed by
    themselves (default: every key of the rows, in the order first seen). formats: {key: format string
    such as "{:.2f}"}; other floats print with 4 significant digits, a missing key or None as an empty cell."""
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    heads = dict(columns) if isinstance(columns, Mapping) else {k: k for k in columns}
    formats = formats or {}

    def cell(key: str, value: Any) -> str:
        if value is None:
            return ""
        if key in formats:
            return formats[key].format(value)
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    out = ["| " + " | ".join(heads.values()) + " |", "|" + "---|" * len(heads)]
    out += ["| " + " | ".join(cell(k, r.get(k)) for k in heads) + " |" for r in rows]
    return "\n".join(out)
