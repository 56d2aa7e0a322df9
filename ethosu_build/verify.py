"""Is an artifact what its manifest says, and does its config still rebuild it?

- `check_files()`: every file of a version against the sha256 its manifest recorded
  (bytes changed on disk are found without rebuilding anything).
- `rebuild()`: the stored config.yaml built again in a temporary store, `model.pte`
  compared byte for byte; on a difference, the likely causes: tool versions and input
  fingerprints (model source, weights, calibration data) that changed since the build.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any

from .fingerprint import file_sha256, tool_versions
from .store import Artifact, check


def check_files(artifact: Artifact) -> list[str]:
    """What makes the version untrustworthy: files missing, changed or unlisted, a manifest
    changed since it was signed (see store.check)."""
    return check(artifact).problems


@dataclass
class Verdict:
    match: bool
    built_sha256: str
    stored_sha256: str
    causes: list[str] = field(default_factory=list)


def drift(manifest: dict[str, Any]) -> list[str]:
    """Tool versions and input fingerprints that differ between the manifest and now."""
    from .build import fingerprints
    from .validate import validate

    causes = []
    now_tools = tool_versions()
    for tool, then in manifest.get("tools", {}).items():
        if now_tools.get(tool) != then:
            causes.append(f"tool version: {tool} {then} -> {now_tools.get(tool)}")
    cfg = validate(manifest["config"])
    now = fingerprints(cfg)
    labels = {"model_source": "model source", "checkpoint": "model weights (checkpoint)",
              "calibration_data": "calibration data", "evaluation_data": "evaluation data"}
    for key, label in labels.items():
        if manifest.get("fingerprints", {}).get(key) != now.get(key):
            causes.append(f"changed {label}: {key} fingerprint differs")
    return causes


def rebuild(artifact: Artifact) -> Verdict:
    """Build the artifact's config.yaml again in a temporary store and compare model.pte."""
    import yaml

    from .build import build

    manifest = artifact.manifest()
    config = yaml.safe_load((artifact.path / "config.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="ethosu-verify-") as tmp:
        config["store"] = {"root": tmp}
        result = build(config, recipe=manifest.get("recipe"))
        built = file_sha256(result.artifact.path / "model.pte")
    stored = manifest["files"]["model.pte"]["sha256"]
    verdict = Verdict(built == stored, built, stored)
    if not verdict.match:
        verdict.causes = drift(manifest) or ["no tool or input drift found: a nondeterministic step, or a change outside the fingerprinted inputs"]
    return verdict
