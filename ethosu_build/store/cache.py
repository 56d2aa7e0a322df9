"""Content-addressed stage cache: `<root>/cache/<key[:2]>/<key>/`.

An entry is a folder of payload files plus `entry.json`, which lists each file's sha256 and
is signed with the store key (trust.py). It is written in a temporary folder beside its
final place and renamed into place, so a killed build leaves no entry that reads as valid.

Reading trusts nothing on disk: an entry counts only if its entry.json is a regular file
signed by this reader's key, names this key, and every file it lists is a regular file
(never a symlink) with the recorded sha256. Anything else (unsigned, signed by another key,
changed, a symlink, a listed file missing) is discarded, with one log line, and the stage
is computed again. Files the entry does not list are never opened. `Entry.read()` checks a
file's hash again on the bytes it returns, so a file swapped after the check is caught too.

`claim(key)` serializes the computation of one key across processes (parallel sweep jobs,
cluster nodes on a shared filesystem): the first computes, the others wait, then read its
entry. `pin(keys)` holds a running build's keys against `gc()`, which is the only code that
knows this layout well enough to delete from it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from ..errors import ConfigError, ConfigIssue
from ..fingerprint import sha256_bytes
from .safe_fs import is_real_dir as _is_real_dir
from .safe_fs import read_regular as _read_regular
from .safe_fs import remove as _remove
from .safe_fs import stale as _stale
from .trust import TRUST_WORDS, signed_payload, store_key

log = logging.getLogger(__name__)
ENTRY = "entry.json"
_KEY = re.compile(r"\A[0-9a-f]{64}\Z")
_FILE_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.-]*\Z")  # a plain name inside the entry
_MAX_ENTRY_JSON = 1 << 20
MAX_UNSIZED = 4 << 30  # the cap on a file of an entry that records no sizes (written before they were)
PINS = ".pins"  # cache/.pins/<id>.json: the keys of a running build, flock-held while it runs


class CorruptEntry(Exception):
    """A cache entry that failed a check while being read."""


@dataclass(frozen=True)
class Entry:
    """A verified cache entry: read its files through `read`, never by path."""

    key: str
    path: Path
    files: dict[str, str]  # name -> sha256
    sizes: dict[str, int]  # name -> bytes (entries written before sizes were recorded: none)

    def read(self, name: str) -> bytes:
        if name not in self.files:
            raise KeyError(name)
        # Never more than the size signed for it: a planted sparse file of 40 GB is refused unread.
        data = _read_regular(self.path / name, self.sizes.get(name, MAX_UNSIZED))
        if sha256_bytes(data) != self.files[name]:
            raise CorruptEntry(f"{name} changed after it was verified")
        return data

    def has(self, name: str) -> bool:
        return name in self.files

    def read_json(self, name: str):
        return json.loads(self.read(name))


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)  # paths relative to the cache folder


class StageCache:
    def __init__(self, root: Path | str):
        self.dir = Path(root) / "cache"

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / key

    # --- reading ----------------------------------------------------------------------------

    def get(self, key: str) -> Entry | None:
        """The entry if it exists and verifies; anything that fails a check is discarded."""
        path = self.path(key)
        if not os.path.lexists(path):
            return None
        try:
            return self._verify(key, path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, CorruptEntry) as exc:
            self.discard(key, str(exc) or type(exc).__name__)
            return None

    def _verify(self, key: str, path: Path) -> Entry:
        if not _KEY.match(key):
            raise CorruptEntry(f"{key!r} is not a stage key")
        for p in (self.dir, path.parent, path):
            if p.is_symlink() or not p.is_dir():
                raise CorruptEntry(f"{p.name} is not a folder of the store (a symlink, or a file)")
        raw = _read_regular(path / ENTRY, _MAX_ENTRY_JSON)
        meta = json.loads(raw)
        if not isinstance(meta, dict):
            raise CorruptEntry(f"{ENTRY} holds {type(meta).__name__}, not an object")
        verdict = store_key(self.dir.parent).verify(signed_payload(meta), meta.get("signature"))
        if verdict != "ok":
            raise CorruptEntry(f"{ENTRY}: {TRUST_WORDS[verdict]}")
        if meta.get("key") != key:
            raise CorruptEntry(f"{ENTRY} names key {str(meta.get('key'))[:12]}")
        files = meta["files"]
        if not isinstance(files, dict) or not all(
            isinstance(n, str) and _FILE_NAME.match(n) and n != ENTRY for n in files
        ):
            raise CorruptEntry(f"{ENTRY} lists a file name outside the entry")
        sizes = meta.get("sizes") or {}
        if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()):
            raise CorruptEntry(f"{ENTRY} lists sizes that are not byte counts")
        entry = Entry(key, path, dict(files), dict(sizes))
        for name in files:
            entry.read(name)  # regular file, recorded sha256
        return entry

    def keys(self) -> list[str]:
        """The keys of the entries present (not yet verified), for checks and listings."""
        if self.dir.is_symlink() or not self.dir.is_dir():
            return []
        return sorted(
            p.name
            for b in self.dir.iterdir()
            if not b.is_symlink() and b.is_dir()
            for p in b.iterdir()
            if _KEY.match(p.name) and not p.is_symlink() and p.is_dir()
        )

    def discard(self, key: str, reason: str) -> None:
        """Log once and remove what is at the key's place (a symlink: only the link)."""
        log.warning("cache entry %s is not trusted (%s); discarding it and computing the stage again", key[:12], reason)
        path = self.path(key)
        for folder in (self.dir, path.parent):
            if folder.is_symlink():  # never remove through a link: the link goes instead
                folder.unlink()
                return
        _remove(path)

    # --- writing ----------------------------------------------------------------------------

    def claim(self, key: str, stage: str) -> KeyLock:
        """The key's lock, held (a context manager); logs once if another process holds it."""
        lock_file = self.path(key).with_name(f"{key}.lock")
        _real_dir(lock_file.parent)
        return KeyLock(lock_file, f"{stage}: waiting for another process computing the same key {key[:12]}")

    @contextmanager
    def put(self, key: str, stage: str) -> Iterator[Path]:
        """Yield an empty folder to write the entry's files into; on success it becomes the
        entry atomically. If another process published the same key first, theirs is kept
        when it verifies."""
        final = self.path(key)
        _real_dir(final.parent)
        tmp = final.parent / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            files = {}
            for p in sorted(tmp.iterdir()):
                if not _FILE_NAME.match(p.name) or p.is_symlink() or not p.is_file():
                    raise ValueError(
                        f"stage {stage} wrote {p.name!r}: an entry holds regular files with plain names only"
                    )
                files[p.name] = sha256_bytes(p.read_bytes())
            sizes = {name: (tmp / name).stat().st_size for name in files}
            meta = {
                "stage": stage,
                "key": key,
                "created": datetime.now(timezone.utc).isoformat(),
                "files": files,
                "sizes": sizes,  # reads are capped at these (a planted huge file is never read)
            }
            meta["signature"] = store_key(self.dir.parent).sign(signed_payload(meta))
            (tmp / ENTRY).write_text(json.dumps(meta, indent=1, sort_keys=True))
            try:
                os.rename(tmp, final)
            except OSError:
                if self.get(key) is None:  # the existing one did not verify and is gone now
                    os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def pin(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold `keys` against gc for as long as the block runs: a build pins every stage key
        it reads or writes until its artifact is published (and names them). The pin file is
        flock-held and made under a temporary name first, so gc never sees it unlocked."""
        folder = self.dir / PINS
        tmp = folder / f".tmp-{uuid.uuid4().hex}"
        for attempt in range(3):  # another build's cleanup below may remove the folder meanwhile
            _real_dir(folder)
            try:  # 0644: the keys are no secret, and a teammate's gc in a shared store must read them
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        final = folder / f"{uuid.uuid4().hex}.json"
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, json.dumps(sorted(keys)).encode())
            os.rename(tmp, final)
            yield
        finally:
            final.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
            os.close(fd)
            # A build that stored nothing (a config error found by the model check) leaves
            # nothing in the store: the folders go when empty (rmdir fails otherwise).
            for empty in (folder, self.dir):
                try:
                    os.rmdir(empty)
                except OSError:
                    break

    def _pinned(self, drop) -> set[str] | None:
        """The keys of the builds running now (their pin files are locked); a pin file that
        no process holds is left from a killed build and dropped. None: a pin this user cannot
        read (another user's, in a shared store), so no entry may be taken as unheld."""
        keys: set[str] = set()
        folder = self.dir / PINS
        if not _is_real_dir(folder):
            return keys
        for p in sorted(folder.iterdir()):
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except PermissionError:
                log.warning("gc: %s is a pin this user cannot read; keeping every cache entry", p.name)
                return None
            except OSError:
                drop(p)  # a symlink or folder: no pin of ours
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a build runs
                try:
                    listed = json.loads(os.read(fd, _MAX_ENTRY_JSON))
                    keys.update(k for k in listed if isinstance(k, str) and _KEY.match(k))
                except (OSError, ValueError, TypeError, RecursionError):
                    pass  # being written, or not a pin: it protects nothing
            else:
                if p.name.startswith(".tmp-") and not _stale(p):
                    pass  # a pin being made right now (still unlocked for an instant)
                else:
                    drop(p)
            finally:
                os.close(fd)
        return keys

    # --- garbage collection -------------------------------------------------------------------

    def gc(self, keep: set[str], dry_run: bool = False) -> GcReport:
        """Remove entries whose key is not in `keep`, stale temporary folders and locks, and
        anything else found in the cache's layout (symlinks are unlinked, never followed)."""
        report = GcReport()

        def drop(p: Path) -> None:
            report.removed.append(str(p.relative_to(self.dir)))
            if not dry_run:
                _remove(p)

        if self.dir.is_symlink():
            drop(self.dir)
            return report
        if not self.dir.is_dir():
            return report
        pinned = self._pinned(drop)  # never what a running build wrote, reads or holds
        if pinned is None:
            keep = set(self.keys())
        else:
            keep = keep | pinned
        for bucket in sorted(self.dir.iterdir()):
            if bucket.name == PINS and _is_real_dir(bucket):
                continue
            if bucket.is_symlink() or not bucket.is_dir() or not re.fullmatch(r"[0-9a-f]{2}", bucket.name, re.ASCII):
                drop(bucket)
                continue
            for item in sorted(bucket.iterdir()):
                name = item.name
                if item.is_symlink():
                    drop(item)
                elif _KEY.match(name) and item.is_dir():
                    if name not in keep:
                        drop(item)
                elif name.endswith(".lock") and _KEY.match(name[: -len(".lock")]):
                    if name[: -len(".lock")] not in keep and _stale(item):
                        drop(item)
                elif name.startswith(".tmp-"):
                    if _stale(item):  # a younger one may belong to a build running now
                        drop(item)
                else:
                    drop(item)
        return report


class KeyLock:
    """An exclusive flock on a key's lock file in the store, held from creation to release().

    The lock file is opened without following a symlink and must be a regular file: a
    hostile store's link or FIFO in its place is removed, never written through. A flock
    belongs to the open file description, so a child forked while it is held shares it:
    `hand_over()` in the parent leaves the lock to such a child (pipeline/stage.py), which
    releases it by exiting."""

    held: ClassVar[set[int]] = set()  # descriptors of this process's held locks (a forked child closes the others)

    def __init__(self, path: Path, waiting: str):
        self.fd = _open_lock_file(path)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s", waiting)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        KeyLock.held.add(self.fd)

    def release(self) -> None:
        if self.fd < 0:
            return
        KeyLock.held.discard(self.fd)
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1

    def hand_over(self) -> None:
        """Close this process's descriptor without unlocking: the lock stays with the child
        forked while it was held, until that child exits."""
        KeyLock.held.discard(self.fd)
        os.close(self.fd)
        self.fd = -1

    def __enter__(self) -> KeyLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _ in range(2):
        try:
            fd = os.open(path, flags, 0o644)
        except PermissionError:
            # A teammate's lock file in a shared store: flock needs no write access, and the
            # file is theirs to keep (removing it would let two builds hold "the" lock).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # ELOOP (a symlink), EISDIR (a folder): not ours to follow; remove and retry
            if not os.path.lexists(path):
                raise
            log.warning("%s is not a lock file; removing it", path.name)
            _remove(path)
            continue
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)  # a FIFO or device put in its place
        log.warning("%s is not a lock file; removing it", path.name)
        _remove(path)
    raise OSError(f"{path} cannot be made a lock file")


def _real_dir(path: Path) -> None:
    """Create `path` (a bucket, or .pins) as a folder of the store; never write through a
    symlink: one planted in the cache's layout is removed (only ethosu-build writes there),
    and a symlinked cache/ itself is refused, naming store.root."""
    if path.parent.is_symlink():
        raise ConfigError(
            ConfigIssue(
                "store.root",
                f"{path.parent} is a symlink; accepted: a store whose cache/ is its own folder (for a cache on "
                "another disk, set store.root to a folder there)",
            )
        )
    if path.is_symlink() or (os.path.lexists(path) and not path.is_dir()):
        log.warning("%s is not a folder of the store; removing it", path)
        _remove(path)
    path.mkdir(parents=True, exist_ok=True)
