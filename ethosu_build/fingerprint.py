"""Content fingerprints and cache keys, all computed without importing torch or executorch.

A key is the sha256 of canonical JSON (sorted keys, no whitespace): the same inputs give the
same key in any process, on any machine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

# Versions that determine the bytes of a build; recorded in every manifest and in every key.
TOOLS = ("torch", "torchao", "executorch", "ethos-u-vela", "tosa-tools", "ethosu-build")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def key_of(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path | str) -> str:
    """The sha256 of a file's content, read once per process while its stat stays the same:
    a build hashes its inputs for the stage keys, the lock's drift check and the manifest
    (data fingerprints, the checkpoint, Vela's .ini), a sweep's process for every job."""
    before = os.stat(path)
    key = (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns)
    known = _hashes.get(key)
    if known is not None:
        return known
    digest = _read_sha256(path)
    after = os.stat(path)
    settled = time.time_ns() - max(before.st_mtime_ns, before.st_ctime_ns) > RACY_NS
    if settled and (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns) == key:
        _hashes[key] = digest
    return digest


def _read_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# The memo's key is the file and its state: (st_dev, st_ino) is the file itself, however its
# path is spelled or linked; st_size, st_mtime_ns and st_ctime_ns change when its content is
# written (st_ctime_ns even when a tool writes it and sets the old mtime back, as `cp -p` or
# `rsync -t` do: no call sets a ctime).
_hashes: dict[tuple[int, int, int, int, int], str] = {}
# A file whose mtime or ctime lies within RACY_NS of the hashing is hashed but not memoized: a
# second write within the same timestamp tick (a few ms, 2 s on FAT) would leave its stat as
# it was ("racy git"). Freshly written inputs are read each time, as they were before the memo.
RACY_NS = 2_000_000_000


def tool_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def tool_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    versions.update({t: tool_version(t) for t in TOOLS})
    return versions


def tool_versions_for_key() -> dict[str, str | None]:
    """As tool_versions(), but Python only to major.minor: a patch release of the
    interpreter does not change the program."""
    versions = dict(tool_versions())
    versions["python"] = "{}.{}".format(*sys.version_info[:2])
    return versions


def _module_origin(dotted: str) -> Path | None:
    """The file or package directory that defines the longest importable prefix of `dotted`.

    Walks the path one component at a time with PathFinder so that no module (and nothing it
    imports, such as torch) is executed, except top-level packages found by find_spec."""
    parts = dotted.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    found = spec
    for i in range(1, len(parts)):
        if not found.submodule_search_locations:
            break
        sub = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(found.submodule_search_locations))
        if sub is None:
            break
        found = sub
    if found.submodule_search_locations:
        return Path(list(found.submodule_search_locations)[0])
    return Path(found.origin) if found.origin and found.origin not in ("built-in", "frozen") else None


@functools.lru_cache(maxsize=64)
def source_fingerprint(target: str) -> dict[str, Any]:
    """Fingerprint of the code behind a `_target_`: the sha256 of its module file, or of every
    .py file in its package. Code from an installed distribution (torch, executorch, ...) is
    covered by the tool versions instead and is named here by its top-level package."""
    origin = _module_origin(target)
    if origin is None:
        return {"target": target, "source": None}
    if "site-packages" in origin.parts or "dist-packages" in origin.parts:
        top = target.split(".")[0]
        dist = importlib.metadata.packages_distributions().get(top, [top])[0]
        if dist != "ethosu-build":
            return {"target": target, "package": dist, "version": tool_version(dist)}
    files = sorted(origin.rglob("*.py")) if origin.is_dir() else [origin]
    root = origin if origin.is_dir() else origin.parent
    h = hashlib.sha256()
    for f in files:
        if "__pycache__" in f.parts:
            continue
        h.update(str(f.relative_to(root)).encode() + b"\0" + Path(f).read_bytes() + b"\0")
    return {"target": target, "sha256": h.hexdigest()}
