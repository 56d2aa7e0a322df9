"""Data fingerprints, without heavy imports: what determines a source's samples, for the
stage keys, the manifest and the recipe locks. Each file is hashed once per process while it
stays unchanged (fingerprint.file_sha256): a folder is listed again each time (names and
stats, no content), so an added, removed or renamed file shows."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..fingerprint import canonical_json, file_sha256, source_fingerprint, tool_version
from .sources import lookup


def fingerprint(dataset: dict[str, Any]) -> str:
    """sha256 over what determines the samples: the source's config and code, the files it
    reads (by content) and, for packaged data, the package version. A file or folder is
    named in the key by its content only, never by how its path is spelled: `data/a.npz`,
    `./data/a.npz`, its absolute path and a byte-identical copy give the same key."""
    target = str(dataset.get("_target_"))
    source = lookup(target)
    pattern = str(dataset.get("pattern", "*"))
    parts: dict[str, Any] = {
        "config": _by_content(dataset, lambda p: source.samples_in(p, pattern)),
        "source": source_fingerprint(target),
    }
    if source.package:
        parts["package"] = tool_version(source.package)
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def _by_content(value: Any, samples_in: Callable[[Path], list[Path]], key: str = "") -> Any:
    """`value` with every string that names an existing file or folder replaced by a hash
    of its content: the `path` of the built-in sources, and any path argument of a user's
    own source. A folder's sample files are hashed with their names relative to it (labels
    may come from subfolder names); `path` of a folder source holds the files `samples_in`
    lists (its sample files, honouring its `pattern`)."""
    if isinstance(value, dict):
        # steps name no file: a step `resize` is not the folder ./resize
        return {k: v if k == "preprocess" else _by_content(v, samples_in, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_content(v, samples_in, key) for v in value]
    if not isinstance(value, str) or not value or value == "???":
        return value
    p = Path(value).expanduser()
    try:
        if p.is_file():
            return {"file_sha256": file_sha256(p)}
        if p.is_dir():
            files = samples_in(p) if key == "path" else sorted(f for f in p.rglob("*") if f.is_file())
            return {"folder": {str(f.relative_to(p)): file_sha256(f) for f in files}}
    except OSError:
        return value
    return value
