"""Where a build came from: the recipe file, its git commit and dirty state, and its lock.

A lock (`<recipe>.lock.json` beside the recipe, written by `ethosu-artifacts lock`) pins the
tool versions and input fingerprints the recipe was last known to build with; a build of the
recipe compares against it, warns on drift, and stops under `strict=true`.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigIssue
from ..files import atomic_write

log = logging.getLogger(__name__)
LOCK_SUFFIX = ".lock.json"


def recipe_file(name: str | None, search_path: Iterable[str]) -> Path | None:
    """The file Hydra composed for `recipe=NAME`: the first `recipe/NAME.yaml` on the search
    path (entries are `file://DIR` or `pkg://package`, as Hydra writes them)."""
    if not name:
        return None
    for entry in search_path:
        if entry.startswith("file://"):
            base = Path(entry[len("file://") :])
        elif entry.startswith("pkg://"):
            try:
                base = Path(str(importlib.resources.files(entry[len("pkg://") :].replace("/", "."))))
            except (ModuleNotFoundError, TypeError):
                continue
        else:
            continue
        candidate = base / "recipe" / f"{name}.yaml"
        if candidate.is_file():
            return candidate.resolve()
    return None


def _git(folder: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(path: Path | None) -> dict[str, Any] | None:
    """Commit and dirty flag of the git repository holding `path` (a recipe file, else the
    working directory), and whether that file itself has uncommitted changes."""
    target = path if path is not None else Path(os.getcwd())
    folder = target.parent if target.is_file() else target
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    status = _git(folder, "status", "--porcelain") or ""
    info: dict[str, Any] = {"repo": top, "commit": _git(folder, "rev-parse", "HEAD"), "dirty": bool(status)}
    if path is not None and path.is_file():
        # `git status` says nothing of an ignored file, so a recipe that was never committed
        # could pass as clean: a file git does not track is not committed, whatever status says.
        tracked = _git(folder, "ls-files", "--error-unmatch", "--", str(path)) is not None
        own = _git(folder, "status", "--porcelain", "--", str(path)) or ""
        info["file"] = os.path.relpath(path, top)
        info["file_tracked"] = tracked
        info["file_dirty"] = bool(own) or not tracked
    return info


def inside(path: Path, root: str | Path) -> bool:
    """Whether `path` lies in the store `root` (both resolved)."""
    real, base = Path(path).resolve(), Path(os.path.expanduser(str(root))).resolve()
    return base in real.parents


def lock_path(recipe: Path) -> Path:
    return recipe.with_name(recipe.stem + LOCK_SUFFIX)


def lock_content(
    recipe_name: str, tools: dict[str, Any], fingerprints: dict[str, Any], platform: dict[str, Any]
) -> dict[str, Any]:
    from ..numerics import lock_fields

    return {"recipe": recipe_name, "tools": tools, "fingerprints": fingerprints, "platform": lock_fields(platform)}


def write_lock(path: Path, content: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(content, indent=2, sort_keys=True) + "\n")


def read_lock(path: Path) -> dict[str, Any]:
    """A lock file's content; a file that is no lock is a config error naming it."""
    try:
        content = json.loads(path.read_text())
        if (
            not isinstance(content, dict)
            or not isinstance(content.get("tools", {}), dict)
            or not isinstance(content.get("fingerprints", {}), dict)
        ):
            raise ValueError("not a mapping of tools and fingerprints")
    except (OSError, ValueError) as exc:
        raise ConfigError(
            ConfigIssue(
                "recipe",
                f"its lock {str(path)!r} is unreadable ({exc}); accepted: a file written by "
                "`ethosu-artifacts lock`, or none (delete it and lock again)",
            )
        ) from exc
    return content


# What each fingerprint stands for, in drift messages.
INPUTS = {
    "model_source": "model source",
    "checkpoint": "model weights (checkpoint)",
    "calibration_data": "calibration data",
    "evaluation_data": "evaluation data",
    "qat_data": "QAT training data",
}


def drift(
    then: dict[str, Any], tools: dict[str, Any], fingerprints: dict[str, Any], platform: dict[str, Any]
) -> list[str]:
    """Each tool version, input fingerprint and numeric platform field recorded in `then` (a
    lock, or a manifest: both hold `tools`, `fingerprints` and `platform`) that differs from
    now. The one drift check, used by builds of a locked recipe and by `verify`."""
    from ..numerics import lock_fields

    found = []
    now = lock_fields(platform)
    for field, pinned in lock_fields(then.get("platform") or {}).items() if then.get("platform") else ():
        if now.get(field) != pinned:
            found.append(f"platform {field}: {pinned} then, {now.get(field)} now")
    for tool, pinned in (then.get("tools") or {}).items():
        if tools.get(tool) != pinned:
            found.append(f"tool {tool}: {pinned} then, {tools.get(tool)} now")
    for key, pinned in (then.get("fingerprints") or {}).items():
        if fingerprints.get(key) != pinned:
            found.append(f"input {key} ({INPUTS.get(key, key)}) differs")
    return found
