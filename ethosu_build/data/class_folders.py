"""Class folders: the labels `labels_from_subfolders` gives (data.folder, data.images), by one
rule (docs/data-and-models.md, "Class folders"):

- every folder named by ASCII digits only: the label is the number (`0`, `1`, ..., `10`); two
  names of one number (`1` and `01`) are an error naming both;
- no folder named so: the names sorted (by code point) are labelled 0, 1, ... in that order;
- both kinds together (`0`, `1`, `cat`) are an error naming them: `cat` would silently take
  some number's place.

A label the model has no output for is an error too (`beyond`, judged against the model in
pipeline/model_checks.py). Nothing heavy is imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Not str.isdigit(): it takes '²' and other digits that int() refuses or reads otherwise.
_NUMBER = re.compile(r"[0-9]+")
ACCEPTED = (
    "accepted: class folders all named by their label (0, 1, 2, ...) or all by a class name (sorted, numbered from 0)"
)


def _listed(names: Iterable[str], limit: int = 5) -> str:
    names = list(names)
    return ", ".join(repr(n) for n in names[:limit]) + (", ..." if len(names) > limit else "")


def labels(names: Iterable[str], numbers_only: bool = False) -> tuple[dict[str, int], list[str] | None]:
    """(the label of each folder name, the class names by label or None when the names are
    the labels). `numbers_only`: a source that takes only numbered folders (data.folder).
    Raises ValueError naming the folders the rule cannot label."""
    names = sorted(set(names))
    numbers = [n for n in names if _NUMBER.fullmatch(n)]
    others = [n for n in names if not _NUMBER.fullmatch(n)]
    if others and numbers_only:
        raise ValueError(
            f"labels_from_subfolders: folder(s) {_listed(others)} are not integer class labels; accepted: "
            "path/<0, 1, ...>/<file>"
        )
    if others and numbers:
        raise ValueError(
            f"labels_from_subfolders: class folders mix numbers ({_listed(numbers)}) and names ({_listed(others)}); "
            f"{ACCEPTED}"
        )
    if not numbers:
        return {n: k for k, n in enumerate(names)}, names
    by_value: dict[int, list[str]] = {}
    for n in numbers:
        by_value.setdefault(int(n), []).append(n)
    same = [group for group in by_value.values() if len(group) > 1]
    if same:
        raise ValueError(
            f"labels_from_subfolders: class folders {' and '.join(repr(n) for n in same[0])} are both label "
            f"{int(same[0][0])}; accepted: one folder per label, named by its number once (0, 1, ..., 10)"
        )
    return {n: int(n) for n in numbers}, None


def beyond(folders: dict[str, int], outputs: int) -> str | None:
    """Why labels `folders` (name -> label) do not fit a model of `outputs` outputs, or None."""
    over = sorted((label, name) for name, label in folders.items() if label >= outputs)
    if not over:
        return None
    named = ", ".join(f"{name!r} (label {label})" for label, name in over[:5]) + (", ..." if len(over) > 5 else "")
    return (
        f"class folder(s) {named}: the model has {outputs} outputs, labels 0..{outputs - 1}; accepted: class "
        f"folders whose labels are below {outputs}"
    )
