"""`ethosu-artifacts export ID DIR`: a checked version copied whole into DIR (store/export.py),
with --firmware also the firmware bundle (pipeline/package.py). A refused or failed export
leaves DIR as it was. --firmware reads the program through ExecuTorch, imported as the
bundle is made; a plain export reads files only."""

from __future__ import annotations

from ..errors import EXIT_OK, ConfigIssue, UsageError
from ..pipeline import package
from ..pipeline.firmware import DEFAULT_BUNDLE_SAMPLES, DEFAULT_SECTION, SECTION_NAME
from ..store import export
from ..store.artifacts import ArtifactStore
from .common import ID_HELP, Command, _changed_after_check, _checked, _quiet_imports, _resolve


def run(store: ArtifactStore, args) -> int:
    a = _resolve(store, args.id, "ID")
    dest = export.destination(store, args.dir, args.force)
    if args.firmware and not SECTION_NAME.match(args.section):
        raise UsageError(
            ConfigIssue("--section", f"{args.section!r} is not a linker section name; accepted: e.g. .rodata.model")
        )
    if args.bundle_samples < 1:
        raise UsageError(
            ConfigIssue("--bundle-samples", f"{args.bundle_samples} is not a count; accepted: an integer >= 1")
        )
    checked = _checked(a, "ID", "exporting")
    with _changed_after_check(a, "ID"):
        files = export.version_files(a, checked)
    notes = []
    if args.firmware:
        _quiet_imports()
        firmware, notes = package.firmware_files(a, checked.manifest, files, args.section, args.bundle_samples)
        files.update(firmware)
    export.write(files, dest, args.dir)
    print(f"exported {a.id} to {dest}: {', '.join(sorted({n.split('/')[0] for n in files}))}")
    for note in notes:
        print(f"note: {note}")
    return EXIT_OK


def _arguments(p) -> None:
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("dir", metavar="DIR", help="a new or empty folder outside the store")
    p.add_argument(
        "--firmware",
        action="store_true",
        help="also write model_pte.h, model_io.h, memory.h, selected_ops.txt and model.bpte (docs/deploying.md)",
    )
    p.add_argument(
        "--section", default=DEFAULT_SECTION, help=f"linker section of model_pte (default {DEFAULT_SECTION})"
    )
    p.add_argument(
        "--bundle-samples",
        type=int,
        default=DEFAULT_BUNDLE_SAMPLES,
        help=f"test cases in model.bpte (default {DEFAULT_BUNDLE_SAMPLES})",
    )
    p.add_argument("--force", action="store_true", help="write into a DIR that is not empty")


COMMAND = Command(
    "export",
    "copy an artifact whole into DIR (--firmware: and the C headers a firmware needs)",
    ("ethosu-artifacts export digits_cnn fw/model", "ethosu-artifacts export digits_cnn/v2 fw/model --firmware"),
    _arguments,
    run,
    writes="DIR",
)
