"""`ethosu-artifacts gc`: remove the versions named, the store's debris, and the cache entries
no remaining artifact rests on. Reads and removes files only."""

from __future__ import annotations

from ..errors import EXIT_OK
from ..files import printable
from ..store.artifacts import ArtifactStore, DamagedManifest
from .common import Command, _resolve


def run(store: ArtifactStore, args) -> int:
    """Remove the artifacts named with --artifact, the store's debris, and the cache entries
    no remaining artifact rests on. The store and the cache each clean their own layout."""
    from ..store.cache import StageCache

    remove = [_resolve(store, ref, "--artifact") for ref in args.artifact or []]
    keep: set[str] = set()
    for a in store.all():
        if a in remove:
            continue
        try:
            keep.update(str(k) for k in (a.manifest().get("stage_keys") or {}).values())
        except (DamagedManifest, AttributeError):
            continue  # a damaged manifest protects nothing: its stages can be rebuilt
    removed = store.gc(remove, dry_run=args.dry_run)
    cache = StageCache(store.root).gc(keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    n = len(cache.removed)
    names = " ".join(printable(repr(r)[1:-1]) for r in removed)  # planted names may hold escapes
    print(
        f"{verb} {n} cache entr{'y' if n == 1 else 'ies'} or leftover file(s), and {len(removed)} artifact folder(s) "
        f"{names}".rstrip()
    )
    return EXIT_OK


def _arguments(p) -> None:
    p.add_argument("--artifact", metavar="ID", action="append", help="also remove this version (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")


COMMAND = Command(
    "gc",
    "remove cache entries no artifact or running build needs, and debris",
    ("ethosu-artifacts gc --dry-run", "ethosu-artifacts gc --artifact digits_cnn/v1"),
    _arguments,
    run,
)
