"""Recipes written by a search or an optimizing sweep: a config group file that rebuilds one
measured point (`ethosu-build hydra.searchpath=[file://FOLDER] recipe=NAME`): the group choices
it was composed from, and every key of the build pinned to its resolved value."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config.schema import BuildConfig

GROUPS = ("model", "target", "lowering", "quantization", "calibration", "evaluation", "budget")
# where and how it is built (and tracked) is the user's call; the objective is a sweep's, not a build's
NOT_PINNED = ("store", "allow_dirty", "strict", "objective", "tracking")


def write(folder: Path, name: str, cfg: BuildConfig, choices: dict[str, Any], comments: list[str]) -> Path:
    """`folder/recipe/NAME.yaml` (a config group folder: usable on the search path)."""
    body = dataclasses.asdict(cfg)
    body["name"] = name
    for key in NOT_PINNED:
        body.pop(key, None)
    defaults = [f"override /{g}: {choices[g]}" for g in GROUPS if isinstance(choices.get(g), str)]
    header = [
        "# @package _global_",
        *(f"# {c}" for c in comments),
        f"# Build it:   ethosu-build hydra.searchpath=[file://{folder}] recipe={name}",
        f"#             (or copy this file into your recipes/ and: ethosu-build recipe={name})",
        "defaults:" if defaults else "defaults: []  # every key is pinned below",
        *(f"  - {d}" for d in defaults),
        "",
    ]
    path = folder / "recipe" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header) + OmegaConf.to_yaml(OmegaConf.create(body)))
    return path
