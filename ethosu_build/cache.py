"""Content-addressed stage cache: `<root>/cache/<key[:2]>/<key>/`.

An entry is a folder of payload files plus `entry.json`, which lists each file's sha256. It
is written in a temporary folder beside its final place and renamed into place, so a killed
build leaves no entry that reads as valid. An entry whose files do not match their recorded
sha256 is deleted and treated as a miss, never trusted.

`claim(key)` serializes the computation of one key across processes (parallel sweep jobs,
cluster nodes on a shared filesystem): the first computes, the others wait, then read its
entry. Locks are taken down the pipeline only (build -> lower -> quantize -> export), so
nested claims cannot deadlock.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from .fingerprint import file_sha256

log = logging.getLogger(__name__)
ENTRY = "entry.json"


class StageCache:
    def __init__(self, root: Path | str):
        self.dir = Path(root) / "cache"

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / key

    def get(self, key: str) -> Optional[Path]:
        """The entry's folder if it exists and verifies, else None (a corrupt entry is removed)."""
        path = self.path(key)
        meta_file = path / ENTRY
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
            bad = [n for n, sha in meta["files"].items() if file_sha256(path / n) != sha]
        except (OSError, ValueError, KeyError) as exc:
            bad = [f"unreadable: {exc}"]
        if bad:
            log.warning("cache entry %s is corrupt (%s); rebuilding it", key[:12], ", ".join(bad))
            shutil.rmtree(path, ignore_errors=True)
            return None
        return path

    @contextmanager
    def claim(self, key: str, stage: str) -> Iterator[None]:
        """Hold the key's lock; log once if another process holds it."""
        from filelock import FileLock, Timeout

        lock_file = self.path(key).with_name(f"{key}.lock")
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("%s: waiting for another process computing the same key %s", stage, key[:12])
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def put(self, key: str, stage: str) -> Iterator[Path]:
        """Yield an empty folder to write the entry's files into; on success it becomes the
        entry atomically. If another process published the same key first, theirs is kept."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key[:12]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            files = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {"stage": stage, "key": key, "created": datetime.now(timezone.utc).isoformat(), "files": files}
            (tmp / ENTRY).write_text(json.dumps(meta, indent=1, sort_keys=True))
            try:
                os.rename(tmp, final)
            except OSError:
                if self.get(key) is None:  # the existing one was corrupt and is gone now
                    os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
