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
import platform
import sys
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


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
