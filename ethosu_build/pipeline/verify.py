"""Does an artifact's config, or a recipe, still rebuild the stored bytes?

- `rebuild(artifact)`: the artifact's config.yaml built again in a temporary store;
- `rebuild_recipe(...)`: a recipe built in a temporary store, against its newest artifact.
Both compare `model.pte` byte for byte and, on a difference, name the likely causes: the
tool versions and input fingerprints that changed since (store/provenance.py `drift`, the
one drift check). The artifact's own files are checked first (store.artifacts.check).
A rebuild runs the `_target_`s the config names, so `rebuild` builds only a trusted
artifact's config; one this key did not sign is compared with a recipe the user names
(`rebuild_recipe(..., stored=it)`), and nothing of its config is read (docs/trust.md).
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import numerics
from ..config.validate import validate
from ..errors import BudgetBreached, BuildError, ConfigError, ConfigIssue, NothingToDo
from ..fingerprint import file_sha256, tool_versions
from ..store import provenance
from ..store.artifacts import Artifact, ArtifactStore, Check, check, snapshot
from .build import build, fingerprints
from .diff import Diff, diff


@dataclass
class Verdict:
    match: bool
    subject: str  # what was rebuilt: an artifact id, or "recipe NAME"
    stored: Artifact
    built_sha256: str | None = None
    stored_sha256: str | None = None
    causes: list[str] = field(default_factory=list)  # why the bytes may differ (or why they could not be built)
    notes: list[str] = field(default_factory=list)  # drift that did not change the bytes
    diff: Diff | None = None  # what differs between the rebuilt program and the stored one (pipeline/diff.py)


def drift(manifest: dict[str, Any]) -> list[str]:
    """Tool versions and input fingerprints that differ between the manifest and now (none
    to name for a manifest this key did not sign: its word is not taken)."""
    if "config" not in manifest:
        return []
    config = copy.deepcopy(manifest.get("config") or {})
    config["store"] = {"root": tempfile.gettempdir()}  # where it was stored is no input
    return provenance.drift(manifest, tool_versions(), fingerprints(validate(config)), numerics.describe())


def rebuild(artifact: Artifact) -> Verdict:
    """Build the artifact's config again in a temporary store and compare model.pte. The
    config is the checked manifest's own (signed, read once), never a file read after the
    check: a config.yaml swapped meanwhile is never built."""
    checked = check(artifact)
    if not checked.trusted:  # its config names code to run: never built unless this key signed it
        raise ConfigError(
            ConfigIssue("ID", f"not rebuilding {artifact.id}: it is not trusted ({checked.why}) (docs/trust.md)")
        )
    config = copy.deepcopy(checked.manifest["config"])
    return _compare(artifact.id, artifact, checked, config, checked.manifest.get("recipe"), None)


def rebuild_recipe(
    name: str,
    container: dict[str, Any],
    cfg_name: str,
    recipe_path: Path,
    store: ArtifactStore,
    stored: Artifact | None = None,
) -> Verdict:
    """Build the recipe in a temporary store and compare with `stored` (default: the newest
    artifact of the recipe's name). `stored` need not be signed by this key: only its
    model.pte, checked against its manifest, is compared."""
    if stored is None:
        versions = store.versions(cfg_name)
        if not versions:
            raise NothingToDo(
                f"no artifact named {cfg_name!r} in {store.dir} to verify recipe {name!r} against; build it first"
            )
        stored = versions[-1]
    checked = check(stored)
    if checked.problems:  # refused, as every command refuses a damaged version (docs/trust.md)
        raise ConfigError(ConfigIssue("ID", f"not comparing with {stored.id}: it is damaged ({checked.why})"))
    if "model.pte" not in checked.manifest["files"]:
        raise ConfigError(ConfigIssue("ID", f"{stored.id} lists no model.pte to compare a rebuild with"))
    return _compare(f"recipe {name}", stored, checked, container, name, recipe_path)


def _compare(
    subject: str,
    stored: Artifact,
    checked: Check,
    config: dict[str, Any],
    recipe: str | None,
    recipe_path: Path | None,
) -> Verdict:
    """Build `config` in a temporary store and compare model.pte with `stored`'s, as checked.
    The stored manifest's config is read for drift only when trusted (drift hashes the files
    it names); the comparison reads a private copy of the checked files."""
    manifest = checked.manifest
    if not checked.trusted:
        manifest = {k: v for k, v in manifest.items() if k == "files"}  # its bytes only
    verdict = Verdict(False, subject, stored, stored_sha256=manifest["files"]["model.pte"]["sha256"])
    with tempfile.TemporaryDirectory(prefix="ethosu-verify-") as tmp:
        config = {**config, "store": {"root": tmp}}
        try:
            built = build(config, recipe=recipe, recipe_path=recipe_path)
        except (ConfigError, BuildError, BudgetBreached) as exc:
            verdict.causes = [f"it no longer builds: {exc.render().splitlines()[-1].strip()}", *drift(manifest)]
            return verdict
        verdict.built_sha256 = file_sha256(built.artifact.path / "model.pte")
        if verdict.built_sha256 != verdict.stored_sha256:
            copy_ = snapshot(stored, checked, Path(tmp) / "stored")
            verdict.diff = diff(built.artifact, copy_, ids=(subject, stored.id))
    verdict.match = verdict.built_sha256 == verdict.stored_sha256
    if verdict.match:
        verdict.notes = drift(manifest)  # inputs that changed without changing the bytes
    else:
        verdict.causes = drift(manifest) or [
            "no tool or input drift found: the recipe itself changed since that build "
            "(see ethosu-artifacts diff), a nondeterministic step, or a change outside the fingerprinted inputs"
        ]
    return verdict
