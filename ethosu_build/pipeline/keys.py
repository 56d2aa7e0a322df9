"""Stage keys, computed without importing torch or executorch.

Each stage key is the sha256 of canonical JSON of the stage's name and version and what the
stage declares its key is made of (Stage.key_inputs: the config fields that change its
output, the keys of the stages it consumes, tool versions). Paths, logging and launcher
settings never enter a key; inputs enter by content (data.fingerprint, source_fingerprint,
file hashes). The build key combines everything an artifact holds: same key, same version.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config.schema import BuildConfig
from ..fingerprint import key_of
from .stage import StageKeys
from .stages import STAGES

BUILD_VERSION = 3  # bump when what an artifact holds changes for the same stage results


def _build_key_inputs(cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
    return {
        "evaluate": keys["evaluate"],
        "vela": keys["vela"],
        "budget": dataclasses.asdict(cfg.budget),
        # what a device does to a raw frame: the manifest and the firmware headers carry it,
        # whether or not a data source of this build applied it
        "preprocess": cfg.model.preprocess,
    }


def stage_keys(cfg: BuildConfig) -> StageKeys:
    keys: dict[str, str] = {}
    for stage in STAGES:
        keys[stage.name] = key_of({"stage": stage.name, "v": stage.version, **stage.key_inputs(cfg, keys)})
    keys["build"] = key_of({"stage": "build", "v": BUILD_VERSION, **_build_key_inputs(cfg, keys)})
    return StageKeys(keys)
