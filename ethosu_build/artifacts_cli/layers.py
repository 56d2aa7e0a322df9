"""`ethosu-artifacts layers ID`: where a stored artifact's accuracy goes, layer by layer
(pipeline/layers.py): the PT2E quantized model against the float one at every quantized
point, from the stage cache (nothing is rebuilt) on the build's evaluation samples."""

from __future__ import annotations

import json

from ..errors import EXIT_NOT_ALL_WELL, EXIT_OK, ConfigIssue, UsageError
from ..store.artifacts import ArtifactStore
from .common import ID_HELP, Command, _checked, _print_markdown, _quiet_imports, _resolve


def run(store: ArtifactStore, args) -> int:
    _quiet_imports()
    from ..pipeline import layers

    a = _resolve(store, args.id, "ID")
    checked = _checked(a, "ID", "diagnosing")
    if args.samples is not None and args.samples < 1:
        raise UsageError(ConfigIssue("--samples", f"{args.samples} is not a count; accepted: 1 or more"))
    d = layers.of_artifact(checked.manifest, store.root, args.samples)
    if args.plot:
        layers.plot(d, args.plot)
    if args.json:
        print(json.dumps({**d, **layers.worst(d)}, indent=1))
    else:
        _print_markdown("\n".join(layers.report_section(d)).lstrip("\n"))
    return EXIT_OK if d["compared"] else EXIT_NOT_ALL_WELL


def _arguments(p) -> None:
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--json", action="store_true", help="print the table and its sorted views as JSON")
    p.add_argument(
        "--samples", type=int, default=None, help="the first N evaluation samples (default: all the build's)"
    )
    p.add_argument("--plot", metavar="FILE", default=None, help="also draw accumulated and local SQNR to a PNG")


COMMAND = Command(
    "layers",
    "where the accuracy goes: per-layer SQNR, range use and clipping of the quantized model against the float one",
    ("ethosu-artifacts layers digits_cnn", "ethosu-artifacts layers digits_cnn/v2 --json --plot layers.png"),
    _arguments,
    run,
)
