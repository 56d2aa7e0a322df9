"""`ethosu-artifacts show ID`: a checked artifact's report.md, or its manifest (--json). Reads
files only: the report renderer is imported inside `run`, for a version stored without one."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from ..errors import EXIT_NOT_ALL_WELL, EXIT_OK
from ..files import printable
from ..store.artifacts import ArtifactStore, snapshot, verified_bytes
from .common import ID_HELP, Command, _changed_after_check, _checked, _print_markdown, _resolve


def run(store: ArtifactStore, args) -> int:
    """The report of a trusted artifact. One whose files match its manifest but that your key
    did not sign (a store copied from elsewhere) is shown under a warning, exit 1: its
    figures are its own word. Damaged or misplaced: refused."""
    from ..pipeline.report import render
    from ..store.artifacts import REPORT

    a = _resolve(store, args.id, "ID")
    checked = _checked(a, "ID", "showing", signed_elsewhere=True)
    m = checked.manifest  # the bytes checked, never read again
    if not checked.trusted:
        print(
            f"warning: {a.id} is not trusted ({checked.why}): its files match its manifest, but nothing shows "
            "who wrote them; the figures below are its own word (docs/trust.md)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(m, indent=1))
    elif REPORT in m["files"]:
        with _changed_after_check(a, "ID"):
            text = verified_bytes(a, m, REPORT).decode("utf-8", "replace")
        _print_markdown(printable(text))
    else:
        with tempfile.TemporaryDirectory(prefix="ethosu-show-") as tmp, _changed_after_check(a, "ID"):
            _print_markdown(printable(render(m, snapshot(a, checked, Path(tmp)).path / "vela")))
    return EXIT_OK if checked.trusted else EXIT_NOT_ALL_WELL


def _arguments(p) -> None:
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--json", action="store_true", help="print the manifest")


COMMAND = Command(
    "show",
    "one artifact's report.md (tables in a terminal, markdown elsewhere)",
    ("ethosu-artifacts show digits_cnn", "ethosu-artifacts show digits_cnn/v3 --json"),
    _arguments,
    run,
)
