"""The store's file helpers: read what a hostile co-worker may have swapped, safely.

Everything in a store may have been put there by someone else (docs/trust.md), so the
store reads files without following symlinks and refuses anything but a regular file before
reading a byte (a FIFO would block, a device would never end). Both the artifacts and the
cache use these; nothing else in the store opens files of its own.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

STALE_SECONDS = 3600  # a temporary folder or lock older than this belongs to no running build


class NotRegular(ValueError):
    """A path that is a symlink, a folder, a FIFO or a device where a regular file belongs."""


class TooLarge(NotRegular):
    """A regular file larger than the reader's limit (the size signed for it, or a cap)."""


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of a regular file; a symlink, folder, FIFO or device is refused unread, and
    so is a file larger than `limit` (a sparse 20 GB "manifest" is never read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{path.name} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise TooLarge(f"{path.name} is {st.st_size} bytes, more than it may hold ({limit})")
        return f.read() if limit is None else f.read(limit + 1)


def is_real_dir(path: Path) -> bool:
    return not path.is_symlink() and path.is_dir()


def stale(path: Path) -> bool:
    return time.time() - path.lstat().st_mtime > STALE_SECONDS


def remove(path: Path) -> None:
    """Remove a file, a symlink (the link only) or a folder tree (rmtree never follows links)."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)
