"""The artifact store: `<root>/artifacts/<name>/v<N>/`, immutable versions.

A build is assembled in a staging folder beside the versions, then, under a per-name file
lock, either found to duplicate an existing version (same build key, and that version
passes `check`: it is reused and the staging folder dropped) or renamed to the next free
`v<N>`. A rename of a folder is atomic, so readers see a whole version or none, and a
killed build leaves only a `.staging-*` folder that no listing reads.

Nothing in the folder is taken on its word (docs/trust.md). The one rule, in `check()`: a
version is trusted only when its manifest's signature holds under this user's key, the
manifest names the place it sits in (its name and version: signed, so a copy or a rename
to another number is caught), and every file it lists is a regular file with the listed
sha256, with no file it does not list. Every command that prints, copies, reuses or rebuilds
from a version asks `check()` first. Besides:
- a version counts only as a real folder (never a symlink) holding a regular
  `manifest.json`;
- the next version number is one past every `v<N>` name present, whatever it holds, so a
  damaged or half-present version never blocks the next build;
- a path given on the command line is accepted only if it is a version folder of this
  store, and `gc` unlinks symlinks instead of following them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import NAME
from ..errors import ConfigError, ConfigIssue
from ..files import atomic_write
from ..fingerprint import sha256_bytes
from .cache import MAX_UNSIZED, KeyLock
from .safe_fs import NotRegular, TooLarge
from .safe_fs import is_real_dir as _is_real_dir
from .safe_fs import read_regular as _read_regular
from .safe_fs import remove as _remove
from .safe_fs import stale as _stale
from .trust import TRUST_WORDS, Verdict, signed_payload, store_key

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REPORT = "report.md"
MANIFEST_SCHEMA = 1
MAX_MANIFEST = 16 << 20  # a manifest is tens of KiB; a larger file is not one (and is never read whole)
LAST_VERSION = ".last-version"  # the highest v<N> ever issued under a name (ids are never reused)
# Whole and ASCII, no leading zero: `v1\n`, `v01` or `v١` would otherwise be a second v1.
_VERSION_DIR = re.compile(r"\Av([1-9][0-9]*)\Z")


class NotAnArtifact(LookupError):
    """A reference that names no artifact of this store."""


@dataclass(frozen=True)
class Artifact:
    name: str
    version: int
    path: Path
    # A version folder of another store, or an exported one (`diff` compares across stores):
    # its place says nothing, its name and version are its manifest's (unchecked) word.
    foreign: bool = False

    @property
    def id(self) -> str:
        return str(self.path) if self.foreign else f"{self.name}/v{self.version}"

    def manifest(self) -> dict[str, Any]:
        """The parsed manifest; ValueError (DamagedManifest) if it is not a regular file
        holding a JSON object with the fields every manifest has. (Read again at each call:
        what a command acts on is `check()`'s `Check.manifest`, read once.)"""
        return parse_manifest(self, self.read_manifest())

    def read_manifest(self) -> bytes:
        try:
            return _read_regular(self.path / MANIFEST, MAX_MANIFEST)
        except (OSError, ValueError) as exc:
            raise DamagedManifest(f"{self.id}: {MANIFEST} is unreadable ({exc})") from exc


def parse_manifest(artifact: Artifact, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # nesting deep enough to exhaust the parser
        raise DamagedManifest(f"{artifact.id}: {MANIFEST} is unreadable ({type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise DamagedManifest(f"{artifact.id}: {MANIFEST} holds {type(data).__name__}, not an object")
    missing = [k for k, tp in _REQUIRED.items() if not isinstance(data.get(k), tp)]
    if missing:
        raise DamagedManifest(f"{artifact.id}: {MANIFEST} lacks {', '.join(missing)}")
    if not all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in data["files"].values()):
        raise DamagedManifest(f"{artifact.id}: {MANIFEST} lists a file without its sha256")
    return data


class DamagedManifest(ValueError):
    """A version whose manifest cannot be read as one."""


# What every manifest holds, whatever its schema version (docs/artifacts.md, "manifest.json").
_REQUIRED = {"name": str, "version": int, "build_key": str, "files": dict, "config": dict}


@dataclass
class Check:
    """What `check()` found: `problems` are damage (files that differ from the manifest, a
    manifest that does not name the place it sits in); `trust` says whose key signed it."""

    problems: list[str] = field(default_factory=list)
    trust: Verdict = "missing"
    # The manifest as it was checked, read once: what a command acts on (never read again).
    manifest: dict[str, Any] | None = None
    manifest_bytes: bytes = b""

    @property
    def trusted(self) -> bool:
        """The one rule (docs/trust.md): signed by this user's key, in its place, files intact."""
        return not self.problems and self.trust == "ok"

    @property
    def why(self) -> str:
        """Why a version is not trusted, in a few words (empty when it is)."""
        if self.problems:
            more = len(self.problems) - 5
            return "; ".join(self.problems[:5]) + (f"; and {more} more" if more > 0 else "")
        return "" if self.trust == "ok" else f"its manifest is {TRUST_WORDS[self.trust]}"


@dataclass(frozen=True)
class Finding:
    """Something in the store's folder that is not a whole version (see `scan`)."""

    path: str  # relative to <root>/artifacts
    problem: str
    damage: bool  # a version that cannot be used; otherwise debris
    # What `gc` removes (symlinks, killed builds' staging folders, half-present versions);
    # anything else in the folder is left for its owner.
    gc_removes: bool = False


class ArtifactStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.dir = self.root / "artifacts"

    # --- reading ----------------------------------------------------------------------------

    def versions(self, name: str) -> list[Artifact]:
        """The versions of `name`: real `v<N>` folders holding a regular manifest.json."""
        base = self.dir / name
        if not NAME.match(name) or not _is_real_dir(self.dir) or not _is_real_dir(base):
            return []
        found = []
        for p in base.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and _is_real_dir(p) and not (p / MANIFEST).is_symlink() and (p / MANIFEST).is_file():
                found.append(Artifact(name, int(m.group(1)), p))
        return sorted(found, key=lambda a: a.version)

    def all(self) -> Iterator[Artifact]:
        if _is_real_dir(self.dir):
            for base in sorted(p for p in self.dir.iterdir() if _is_real_dir(p)):
                yield from self.versions(base.name)

    def find(self, name: str, build_key: str) -> Artifact | None:
        """The version of `name` built with `build_key` that passes `check`; a damaged or
        untrusted one is reported and left alone (the build then makes a new version)."""
        for a in self.versions(name):
            try:
                if a.manifest()["build_key"] != build_key:
                    continue
            except DamagedManifest:
                continue
            checked = check(a)
            if checked.trusted:
                return a
            log.warning("%s has this build key but is not trusted (%s); building a new version", a.id, checked.why)
        return None

    def resolve(self, ref: str) -> Artifact:
        """`name/vN`, `name` (its newest version) or the path of a version folder of this
        store; anything else raises NotAnArtifact."""
        name, sep, ver = ref.partition("/")
        if NAME.match(name) and (not sep or _VERSION_DIR.match(ver)):
            versions = [a for a in self.versions(name) if not sep or f"v{a.version}" == ver]
            if versions:
                return versions[-1]
        return self._from_path(ref)

    def foreign(self, ref: str) -> Artifact:
        """A version folder of another store, or an exported folder: any folder outside this
        store holding a regular manifest.json (`diff` compares across stores and machines).
        Its files are checked against its own manifest by `check()` before anything else."""
        p = Path(ref)
        if not ref or not _is_real_dir(p):
            raise NotAnArtifact(f"{ref!r} is not an artifact of {self.dir}, nor a folder holding a {MANIFEST}")
        real, base = p.resolve(), self.root.resolve()
        if real == base or base in real.parents:
            return self.resolve(ref)  # inside this store: only as one of its versions
        try:
            m = Artifact("?", 0, p, foreign=True).manifest()
        except DamagedManifest as exc:
            raise NotAnArtifact(f"{ref!r} is not an artifact: {str(exc).split(': ', 1)[1]}") from exc
        return Artifact(m["name"], m["version"], p, foreign=True)

    def _from_path(self, ref: str) -> Artifact:
        p = Path(ref)
        known = ", ".join(a.id for a in self.all()) or "none"  # by name, then version number
        if not os.path.lexists(p):
            raise NotAnArtifact(f"no artifact {ref!r} in {self.dir}; known: {known}")
        if p.is_symlink():
            raise NotAnArtifact(f"{ref!r} is a symlink; store commands act only on the store's own folders")
        real, base = p.resolve(), self.dir.resolve()
        # `v2/vela/..` with vela a planted link to ../v3/vela resolves to v3: the path as written
        # (its '..' taken lexically) must name the folder it resolves to.
        if os.path.realpath(os.path.normpath(os.path.abspath(ref))) != os.path.realpath(ref):
            raise NotAnArtifact(f"{ref!r} goes through a symlink before a '..'; store commands follow no link")
        m = _VERSION_DIR.match(real.name)
        if not (m and real.parent.parent == base and NAME.match(real.parent.name)):
            raise NotAnArtifact(
                f"{ref!r} is not an artifact of the store {self.dir} (a version folder "
                f"{self.dir}/<name>/v<N>); known: {known}"
            )
        artifact = Artifact(real.parent.name, int(m.group(1)), self.dir / real.parent.name / real.name)
        if artifact not in self.versions(artifact.name):
            raise NotAnArtifact(
                f"{ref!r} is not a whole version of {artifact.name} (no regular {MANIFEST}, or a symlink)"
            )
        return artifact

    def scan(self) -> list[Finding]:
        """What `all()` skips: symlinks, version folders without a readable manifest,
        leftover staging folders, files that are no version."""
        found: list[Finding] = []
        if not os.path.lexists(self.dir):
            return found
        if not _is_real_dir(self.dir):
            return [Finding(".", f"{self.dir} is not a folder of the store (a symlink, or a file)", True)]
        for base in sorted(self.dir.iterdir()):
            if base.is_symlink() or not base.is_dir():
                found.append(
                    Finding(
                        base.name,
                        "a symlink (not followed)" if base.is_symlink() else "a file, not an artifact name",
                        False,
                        gc_removes=base.is_symlink(),
                    )
                )
                continue
            if not NAME.match(base.name):  # no build writes it, and no command reads it: say so
                found.append(Finding(base.name, "a folder whose name no artifact can have (not read)", False))
                continue
            for p in sorted(base.iterdir()):
                rel = f"{base.name}/{p.name}"
                if p.name in (".lock", LAST_VERSION) and not p.is_symlink():
                    continue
                if p.name.startswith(".staging-") and _is_real_dir(p):
                    if _stale(p):
                        found.append(Finding(rel, "staging folder left by a killed build", False, gc_removes=True))
                elif _VERSION_DIR.match(p.name) and _is_real_dir(p):
                    manifest = p / MANIFEST
                    if manifest.is_symlink() or not manifest.is_file():
                        found.append(Finding(rel, f"half-present version: no {MANIFEST}", True, gc_removes=True))
                else:
                    found.append(
                        Finding(
                            rel,
                            "a symlink (not followed)" if p.is_symlink() else "not a version of the store",
                            p.is_symlink(),
                            gc_removes=p.is_symlink(),
                        )
                    )
        return found

    # --- writing ----------------------------------------------------------------------------

    def check_layout(self, name: str) -> None:
        """`artifacts/` and `artifacts/<name>/` are the store's own folders where they exist
        (a build asks before any stage, so a planted link is a config error, not a failure
        after minutes of work)."""
        for folder in (self.dir, self.dir / name):
            if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
                raise ConfigError(
                    ConfigIssue(
                        "store.root",
                        f"{folder} is a symlink or a file; accepted: a store whose artifacts/ and its name folders "
                        "are its own (for a store on another disk, set store.root to a folder there)",
                    )
                )

    def staging(self, name: str) -> Path:
        self.check_layout(name)
        base = self.dir / name
        base.mkdir(parents=True, exist_ok=True)
        self.check_layout(name)  # made meanwhile by someone else
        path = base / f".staging-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def publish(
        self,
        name: str,
        build_key: str,
        staging: Path,
        manifest: Callable[[int, dict], dict],
        report: Callable[[dict], str] | None = None,
    ) -> tuple[Artifact, bool]:
        """Make `staging` the next version unless `build_key` is already stored.

        `manifest(version, files)` returns the manifest to write, given the version number and
        the sha256/size of every staged file; `report(manifest)`, if given, renders
        report.md, which the manifest then lists too. The manifest is signed last.
        Returns (artifact, created)."""
        base = self.dir / name
        try:
            # One lock kind in the store (cache.KeyLock): a planted symlink, FIFO or folder in
            # its place is removed, never followed or blocked on.
            with KeyLock(base / ".lock", f"{name}: waiting for another build publishing it"):
                existing = self.find(name, build_key)
                if existing is not None:
                    return existing, False
                # One past every v<N> present, whatever it holds: a damaged or half-present
                # version never collides with the next one.
                present = (int(m.group(1)) for p in base.iterdir() if (m := _VERSION_DIR.match(p.name)))
                version = max(max(present, default=0), _last_version(base, store_key(self.root))) + 1
                # An id is never given twice, even after `gc --artifact` removed the newest
                # version: MLflow runs and notes that name it keep meaning those bytes.
                _record_version(base, version, store_key(self.root))
                files = {str(p.relative_to(staging)): _file_entry(p) for p in sorted(staging.rglob("*")) if p.is_file()}
                content = manifest(version, files)
                if report is not None:
                    (staging / REPORT).write_text(report(content))
                    content["files"][REPORT] = _file_entry(staging / REPORT)
                content["signature"] = store_key(self.root).sign(signed_payload(content))
                # The staging folder is private until the rename below publishes it whole.
                (staging / MANIFEST).write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
                final = base / f"v{version}"
                os.rename(staging, final)  # fails rather than overwrite an existing version
                return Artifact(name, version, final), True
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def gc(self, remove: list[Artifact], dry_run: bool = False) -> list[str]:
        """Remove the versions in `remove`, and the debris `scan` finds (staging folders of
        killed builds, half-present versions, symlinks: unlinked, never followed). Returns
        what it removed, relative to <root>/artifacts."""
        removed = []
        for a in remove:
            removed.append(f"{a.name}/v{a.version}")
            if not dry_run and _is_real_dir(a.path):
                shutil.rmtree(a.path)
        for f in self.scan():
            p = self.dir / f.path
            if f.gc_removes:
                removed.append(f.path)
                if not dry_run:
                    p.unlink() if p.is_symlink() else shutil.rmtree(p, ignore_errors=True)
        return removed


def check(artifact: Artifact, hash_files: bool = True) -> Check:
    """The one rule of trust (module docstring): damage (manifest unreadable, a listed file
    missing, changed or not a regular file, files it does not list, a manifest changed since
    it was signed or made for another place) and whose key signed it.

    A foreign version (another store's, or an exported folder) is checked against its own
    manifest only: its place proves nothing, and files it does not list (an export's C
    headers) are never read. Without `hash_files` only the manifest is checked (signature
    and place): what a plain listing affords for every version."""
    result = Check()
    try:
        raw = artifact.read_manifest()
        m = parse_manifest(artifact, raw)
    except DamagedManifest as exc:
        result.problems.append(str(exc).split(": ", 1)[1])
        return result
    result.manifest, result.manifest_bytes = m, raw
    files = m["files"]
    root = None if artifact.foreign else artifact.path.parent.parent.parent
    result.trust = store_key(root).verify(signed_payload(m), m.get("signature"))
    if result.trust == "bad":
        result.problems.append(f"{MANIFEST}: changed since it was signed")
    if not artifact.foreign and (m["name"], m["version"]) != (artifact.name, artifact.version):
        # The signature covers the name and version: a copy to another name or number (a
        # silent rollback) keeps a valid signature, so the place must be compared too.
        result.problems.append(
            f"{MANIFEST}: written for {m['name']!r}/v{m['version']}, found at {artifact.id} (copied or renamed)"
        )
    for name in files if hash_files else ():
        try:
            verified_bytes(artifact, m, name)
        except DamagedManifest as exc:
            result.problems.append(str(exc))
    listed = {os.path.normpath(n) for n in files} | {MANIFEST}
    for p in [] if artifact.foreign or not hash_files else sorted(artifact.path.rglob("*")):
        rel = str(p.relative_to(artifact.path))
        if (p.is_symlink() or not p.is_dir()) and rel not in listed:
            result.problems.append(f"{rel}: not listed in the manifest" + (" (a symlink)" if p.is_symlink() else ""))
    return result


def verified_bytes(artifact: Artifact, manifest: dict[str, Any], name: str) -> bytes:
    """The bytes of a file `manifest` lists, read once (a regular file, reached through no
    symlinked folder) and compared with the listed sha256: the bytes a command uses are the
    bytes it checked. DamagedManifest (its message names the file) otherwise."""
    entry = manifest["files"].get(name)
    if entry is None:
        raise DamagedManifest(f"{name}: not listed in the manifest")
    if not _inside(artifact.path, name):
        raise DamagedManifest(f"{name}: not a path inside the version")
    path = artifact.path / name
    for parent in list(Path(name).parents)[:-1]:  # vela/, check/: real folders of the version
        if not _is_real_dir(artifact.path / parent):
            raise DamagedManifest(f"{name}: {parent} is not a folder of the version (a symlink, or missing)")
    if not os.path.lexists(path):
        raise DamagedManifest(f"{name}: missing")
    size = entry.get("size")
    try:  # never more than the listed size: a planted sparse 40 GB file is refused unread
        data = _read_regular(path, size if isinstance(size, int) and size >= 0 else MAX_UNSIZED)
    except TooLarge as exc:
        listed = isinstance(size, int) and size >= 0
        why = "size differs from the manifest (changed on disk)" if listed else str(exc).removeprefix(path.name + " ")
        raise DamagedManifest(f"{name}: {why}") from exc
    except NotRegular as exc:
        raise DamagedManifest(f"{name}: {str(exc).removeprefix(path.name + ' ')}") from exc
    except OSError as exc:
        raise DamagedManifest(f"{name}: not a regular file") from exc
    if sha256_bytes(data) != entry.get("sha256"):
        raise DamagedManifest(f"{name}: sha256 differs from the manifest (changed on disk)")
    return data


def snapshot(artifact: Artifact, checked: Check, into: Path) -> Artifact:
    """The checked version's files (every one its manifest lists, and the manifest bytes
    that were checked) copied into `into`, a private folder of the caller's: a command that
    reads many files (diff, verify's comparison) reads these, which no one else can swap."""
    assert checked.manifest is not None and not checked.problems
    into.mkdir(parents=True, exist_ok=True)
    (into / MANIFEST).write_bytes(checked.manifest_bytes)
    for name in checked.manifest["files"]:
        (into / name).parent.mkdir(parents=True, exist_ok=True)
        (into / name).write_bytes(verified_bytes(artifact, checked.manifest, name))
    return Artifact(artifact.name, artifact.version, into, foreign=True)


def _last_version(base: Path, key) -> int:
    """The highest version number this name was ever given, as this key recorded it (0 when
    unknown, unreadable or not signed by it: then the folders present decide)."""
    try:
        number, _, mac = _read_regular(base / LAST_VERSION, 4096).decode("ascii").strip().partition(" ")
    except (OSError, ValueError):
        return 0
    if not re.fullmatch(r"[0-9]{1,9}", number) or key.verify(_version_payload(base, number), {
        "key_id": key.id, "hmac": mac}) != "ok":  # fmt: skip
        return 0  # a number planted by someone without the key: versions never jump on their word
    return int(number)


def _record_version(base: Path, version: int, key) -> None:
    path = base / LAST_VERSION
    if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
        _remove(path)  # a folder or link planted in its place must not stop every build of the name
    mac = key.sign(_version_payload(base, str(version)))["hmac"]
    atomic_write(path, f"{version} {mac}\n")


def _version_payload(base: Path, number: str) -> bytes:
    return f"ethosu-build last version\0{base.name}\0{number}".encode()


def _inside(folder: Path, name: str) -> bool:
    norm = os.path.normpath(name)
    return not os.path.isabs(norm) and norm != ".." and not norm.startswith(".." + os.sep) and norm != "."


def _file_entry(path: Path) -> dict[str, Any]:
    data = _read_regular(path)
    return {"sha256": sha256_bytes(data), "size": len(data)}
