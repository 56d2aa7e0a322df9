"""Transient progress bars on stderr (stdout is for results), for the loops users wait on:
calibration, calibration through control flow, quantization-aware training."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def bar(label: str, unit: str, total: int | None = None):
    """A rich progress bar: yields (progress, task); advance with progress.advance(task)."""
    from rich.console import Console  # rich: only once a loop runs, not on a config error
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as progress:
        yield progress, progress.add_task(label, total=total)


class Progress:
    """An iterable that shows a progress bar while someone else's loop consumes it."""

    def __init__(self, items: list, label: str):
        self.items, self.label = items, label

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        with bar(self.label, "samples", total=len(self.items)) as (progress, task):
            for item in self.items:
                yield item
                progress.advance(task)
