"""`ethosu-artifacts summarize SWEEP_DIR`: a sweep's summary.csv, summary.md and pareto.png,
rebuilt from its job dirs (sweep/summary.py, imported inside `run`). Reads no store."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EXIT_OK, ConfigIssue, UsageError
from ..store.artifacts import ArtifactStore
from .common import Command, _print_markdown


def run(store: ArtifactStore, args) -> int:
    """Rebuild a sweep's summary from its job dirs (also of a sweep that was killed)."""
    from ..sweep import summary as sweep

    folder = Path(args.dir)
    if not sweep.is_sweep_dir(folder):
        raise UsageError(
            ConfigIssue(
                "SWEEP_DIR",
                f"{args.dir!r} is not a sweep dir (no job folders with a .hydra/ or "
                f"{sweep.RESULT}); accepted: a hydra.sweep.dir, e.g. outputs/sweeps/DATE/TIME",
            )
        )
    summary = sweep.summarize(folder)
    if args.json:
        print(json.dumps(summary.rows, indent=1))
        return EXIT_OK
    _print_markdown((folder / sweep.SUMMARY_MD).read_text())
    print("wrote " + ", ".join(str(f) for f in summary.files))
    return EXIT_OK


def _arguments(p) -> None:
    p.add_argument("dir", metavar="SWEEP_DIR", help="the sweep dir (hydra.sweep.dir), also of a killed sweep")
    p.add_argument("--json", action="store_true", help="print the rows")


COMMAND = Command(
    "summarize",
    "write summary.csv, summary.md and pareto.png of a sweep dir",
    ("ethosu-artifacts summarize outputs/sweeps/2026-11-28/12-00-00",),
    _arguments,
    run,
    reads_store=False,
)
