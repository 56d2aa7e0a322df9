"""The artifact store: `<root>/artifacts/<name>/v<N>/`, immutable versions.

A build is assembled in a staging folder beside the versions, then, under a per-name file
lock, either found to duplicate an existing version (same build key: that version is reused
and the staging folder dropped) or renamed to the next free `v<N>`. A rename of a folder is
atomic, so readers see a whole version or none, and a killed build leaves only a
`.staging-*` folder that no listing reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from filelock import FileLock

from .fingerprint import file_sha256

MANIFEST = "manifest.json"
REPORT = "report.md"
MANIFEST_SCHEMA = 1
_VERSION_DIR = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Artifact:
    name: str
    version: int
    path: Path

    @property
    def id(self) -> str:
        return f"{self.name}/v{self.version}"

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / MANIFEST).read_text())


class ArtifactStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.dir = self.root / "artifacts"

    # --- reading ----------------------------------------------------------------------------

    def versions(self, name: str) -> list[Artifact]:
        base = self.dir / name
        if not base.is_dir():
            return []
        found = []
        for p in base.iterdir():
            m = _VERSION_DIR.match(p.name)
            if m and (p / MANIFEST).is_file():
                found.append(Artifact(name, int(m.group(1)), p))
        return sorted(found, key=lambda a: a.version)

    def all(self) -> Iterator[Artifact]:
        if self.dir.is_dir():
            for base in sorted(p for p in self.dir.iterdir() if p.is_dir()):
                yield from self.versions(base.name)

    def find(self, name: str, build_key: str) -> Optional[Artifact]:
        for a in self.versions(name):
            try:
                if a.manifest().get("build_key") == build_key:
                    return a
            except (OSError, ValueError):
                continue
        return None

    def resolve(self, ref: str) -> Artifact:
        """`name/vN`, `name` (newest version) or a path to a version folder."""
        p = Path(ref)
        if (p / MANIFEST).is_file():
            m = _VERSION_DIR.match(p.resolve().name)
            return Artifact(p.resolve().parent.name, int(m.group(1)) if m else 0, p)
        name, _, ver = ref.partition("/")
        versions = self.versions(name)
        if ver:
            versions = [a for a in versions if f"v{a.version}" == ver]
        if not versions:
            raise KeyError(ref)
        return versions[-1]

    # --- writing ----------------------------------------------------------------------------

    def staging(self, name: str) -> Path:
        base = self.dir / name
        base.mkdir(parents=True, exist_ok=True)
        path = base / f".staging-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        return path

    def publish(
        self, name: str, build_key: str, staging: Path, manifest: Callable[[int, dict], dict],
        report: Optional[Callable[[dict], str]] = None,
    ) -> tuple[Artifact, bool]:
        """Make `staging` the next version unless `build_key` is already stored.

        `manifest(version, files)` returns the manifest to write, given the version number and
        the sha256/size of every staged file; `report(manifest)`, if given, renders
        report.md, which the manifest then lists too. Returns (artifact, created)."""
        base = self.dir / name
        try:
            with FileLock(str(base / ".lock")):
                existing = self.find(name, build_key)
                if existing is not None:
                    return existing, False
                version = max((a.version for a in self.versions(name)), default=0) + 1
                files = {str(p.relative_to(staging)): _file_entry(p) for p in sorted(staging.rglob("*")) if p.is_file()}
                content = manifest(version, files)
                if report is not None:
                    (staging / REPORT).write_text(report(content))
                    content["files"][REPORT] = _file_entry(staging / REPORT)
                tmp = staging / (MANIFEST + ".tmp")
                tmp.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
                os.replace(tmp, staging / MANIFEST)
                final = base / f"v{version}"
                os.rename(staging, final)  # fails rather than overwrite an existing version
                return Artifact(name, version, final), True
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": file_sha256(path), "size": path.stat().st_size}
