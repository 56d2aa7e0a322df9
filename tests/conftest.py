"""Shared helpers: compose configs through Hydra's compose API, build in-process, run the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
BIN = Path(sys.executable).parent


def compose_config(overrides: list[str]) -> tuple[dict[str, Any], str | None]:
    """The resolved config `ethosu-build OVERRIDES` would build, and the recipe chosen."""
    with initialize_config_module("ethosu_build.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        recipe = cfg.hydra.runtime.choices.get("recipe")
        with open_dict(cfg):
            del cfg["hydra"]
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False), recipe


def build_in_process(overrides: list[str], root: Path):
    from ethosu_build.build import build

    container, recipe = compose_config(overrides + [f"store.root={root}"])
    return build(container, recipe=recipe, cli_overrides=overrides)


def run_cli(args: list[str], cwd: Path, tool: str = "ethosu-build", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / tool), *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=900,
    )


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="session", autouse=True)
def store_key_file(tmp_path_factory) -> Path:
    """The tests' own store key (trust.py), not the user's: builds in this process and in
    the CLI subprocesses the tests start sign and verify with it."""
    from ethosu_build.trust import KEY_ENV

    path = tmp_path_factory.mktemp("key") / "store.key"
    os.environ[KEY_ENV] = str(path)
    return path


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """One store for tests that only need some artifact: its stage cache is shared."""
    return tmp_path_factory.mktemp("shared_store")


@pytest.fixture
def user_repo(tmp_path) -> Path:
    """A copy of a user's repository: their own model package and config groups/recipes."""
    dest = tmp_path / "user_repo"
    shutil.copytree(FIXTURES / "user_repo", dest)
    return dest
