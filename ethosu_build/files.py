"""Domain-free helpers, written once: atomic writes, CSV rows, markdown tables, Pareto fronts.

Every file another process or person reads (a job's result, a sweep's summary, a lock, a
manifest, an exported file) is written beside its place and renamed over it, so a reader
sees the old file or the whole new one, never half of one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary file in `path`'s folder, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_bytes(data if isinstance(data, bytes) else data.encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_json(path: Path, obj: Any, indent: int = 1) -> None:
    atomic_write(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


def csv_text(
    rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None, cell: Callable[[Any], Any] = lambda v: v
) -> str:
    """CSV of `rows` with a header: `fields` in order, else every key in order of first use
    (rows that carry more keys add columns)."""
    if fields is None:
        fields = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({f: cell(r.get(f)) for f in fields})
    return out.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], cell: Callable[[Any], str] | None = None
) -> str:
    """A GitHub markdown table; `cell` formats each value (default: 4 significant digits for
    floats, '-' for None), and a '|' inside a cell is escaped."""
    fmt = cell or format_cell
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v).replace("|", "\\|").replace("\n", " ") for v in row) + " |" for row in rows]
    return "\n".join(lines)


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pareto_front(items: Iterable[T], objectives: Sequence[tuple[Callable[[T], float | None], str]]) -> list[T]:
    """The items no other item beats: at least as good on every objective and better on
    one. `objectives` are (value of an item, "min" or "max"); items with a missing value
    are left out. Sorted by the first objective, best first."""
    signs = {"min": 1.0, "max": -1.0}
    scored = []
    for item in items:
        values = [get(item) for get, _ in objectives]
        if all(v is not None for v in values):
            scored.append((item, [signs[d] * float(v) for v, (_, d) in zip(values, objectives)]))

    def dominated(a: list[float]) -> bool:
        return any(all(x <= y for x, y in zip(b, a)) and any(x < y for x, y in zip(b, a)) for _, b in scored)

    front = [(item, s) for item, s in scored if not dominated(s)]
    return [item for item, _ in sorted(front, key=lambda pair: pair[1][0])]


# C0 and C1 control characters but tab and newline: ANSI/OSC escapes among them could clear a
# warning off the screen, retitle the terminal or plant a hyperlink.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` safe to print to a terminal: control characters shown as U+FFFD."""
    return _CONTROL.sub("\ufffd", text)
