"""An export: a checked version copied whole (every file its manifest lists, and the manifest)
into a folder outside the store (`ethosu-artifacts export`, docs/artifacts.md). An exported
folder is an artifact of no store: `diff` checks it against its own manifest.

Everything is written to a staging folder beside DIR first and moved in only when complete:
a refused or failed export leaves DIR as it was. The firmware files an export may add are
the pipeline's (pipeline/package.py); this module writes whatever bytes it is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import IO_ERRNOS, ConfigIssue, UsageError
from .artifacts import MANIFEST, Artifact, ArtifactStore, Check, verified_bytes


def destination(store: ArtifactStore, given: str, force: bool) -> Path:
    """DIR (`given`, as the user wrote it), if it is a new or empty folder (or `force`) outside
    the store that can be made."""
    if not given.strip():
        raise UsageError(ConfigIssue("DIR", "is empty; accepted: the path of a new or empty folder"))
    dest = Path(given)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(ConfigIssue("DIR", f"{given!r} exists and is not a folder; accepted: a new or empty folder"))
    real, root = dest.resolve(), store.root.resolve()
    if real == root or root in real.parents:  # the store writes only its own layout (docs/trust.md)
        raise UsageError(
            ConfigIssue("DIR", f"{given!r} is inside the store {store.root}; accepted: a folder outside it")
        )
    if dest.is_dir() and any(dest.iterdir()) and not force:
        held = sorted(p.name for p in dest.iterdir())
        raise UsageError(
            ConfigIssue(
                "DIR",
                f"{given!r} is not empty ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); accepted: a "
                "new or empty folder, or --force to write the exported files over the ones of the same name",
            )
        )
    return dest


def version_files(a: Artifact, checked: Check) -> dict[str, bytes]:
    """The checked manifest's bytes, and every file it lists read once and compared with it
    (DamagedManifest: a file changed since the check)."""
    files = {MANIFEST: checked.manifest_bytes}
    files.update((name, verified_bytes(a, checked.manifest, name)) for name in checked.manifest["files"])
    return files


def write(files: dict[str, bytes], dest: Path, given: str) -> None:
    """`files` (names may hold one folder level: vela/, check/) into `dest`, whose parent
    folders are made only now, once the export is sure to be written (a refused one leaves
    no folder behind). A folder that cannot be written is the user's to fix (exit 2); a full
    disk or failing device fails the export (exit 1)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            ConfigIssue("DIR", f"{given!r}: its parent folder cannot be made ({exc.strerror or exc})")
        ) from exc
    try:
        _move_in(files, dest)
    except OSError as exc:
        if exc.errno in IO_ERRNOS:
            raise  # a failed export (exit 1, the CLI's map), not a bad DIR
        raise UsageError(ConfigIssue("DIR", f"{given!r} cannot be written ({exc.strerror or exc})")) from exc


def _move_in(files: dict[str, bytes], dest: Path) -> None:
    """Write `files` into a staging folder beside `dest`, then move them in: a new folder by
    one rename, an existing one file by file (each an atomic replace), never through a
    symlinked folder of DIR."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.export-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # a new DIR as mkdir would make it, not mkdtemp's 0700
    try:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        if not dest.exists():
            os.replace(staging, dest)
            return
        for folder in {Path(n).parent for n in files} - {Path(".")}:
            if (dest / folder).is_symlink() or (dest / folder).exists() and not (dest / folder).is_dir():
                raise UsageError(
                    ConfigIssue(
                        "DIR", f"{dest / folder} is a symlink or a file; accepted: a DIR with {folder}/ a folder"
                    )
                )
        # everything that could refuse a file is found before the first is replaced: a refused
        # export leaves DIR as it was
        taken = [n for n in files if (dest / n).is_dir() and not (dest / n).is_symlink()]
        if taken:
            raise UsageError(ConfigIssue("DIR", f"{dest / taken[0]} is a folder; accepted: a DIR where it is not"))
        for name in files:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
