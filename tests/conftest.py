"""Shared helpers: compose configs as the CLI would, build in-process, run the CLIs, and the
store assertions many tests make (consistent, nothing stored, sweep rows)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from ethosu_build import numerics

numerics.pin()  # before any test imports torch: in-process builds compute as the CLI's do

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
BIN = Path(sys.executable).parent


def compose_config(overrides: list[str]) -> tuple[dict[str, Any], str | None]:
    """The resolved config `ethosu-build OVERRIDES` would build, and the recipe chosen."""
    from ethosu_build.config.compose import compose

    container, recipe, _ = compose(overrides)
    return container, recipe


# Other machines, as far as one machine can stand in for them: the instruction set ATen,
# oneDNN and MKL would pick, and the thread count (environment for run_cli).
# For tests whose subject is not the evaluation: it then runs on few samples (the default
# evaluates 360 and runs 16 through the TOSA reference model).
FEW_EVALUATED = ["evaluation.num_samples=32", "evaluation.tosa_samples=4"]

SIMULATED_MACHINES = {
    "sse4.1, 1 thread": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"},
    "avx2, 4 threads": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                        "OMP_NUM_THREADS": "4"},
}  # fmt: skip


def published_sha(name: str) -> str:
    """The sha256 prefix docs/recipes.md publishes for a build (its table of portable builds)."""
    table = (ROOT / "docs" / "recipes.md").read_text()
    match = re.search(rf"^\| `{re.escape(name)}` \|[^|]*\| `([0-9a-f]{{16}})…` \|", table, re.M)
    assert match, f"no published sha256 for {name} in docs/recipes.md"
    return match.group(1)


def build_in_process(overrides: list[str], root: Path):
    from ethosu_build.pipeline.build import build

    container, recipe = compose_config(overrides + [f"store.root={root}"])
    return build(container, recipe=recipe, cli_overrides=overrides)


def run_cli(
    args: list[str], cwd: Path, tool: str = "ethosu-build", env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / tool), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=900,
    )


def manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / "manifest.json").read_text())


def csv_rows(path: Path) -> list[dict[str, str]]:
    from ethosu_build.files import read_csv

    return read_csv(path)


def flock_held(path: Path) -> bool:
    """Whether some open file description holds an exclusive flock on `path`."""
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def assert_nothing_stored(root: Path) -> None:
    """No version, no staging folder, nothing but lock files under <root>/artifacts."""
    artifacts = root / "artifacts"
    leftovers = [p for p in artifacts.rglob("*") if p.name != ".lock"] if artifacts.exists() else []
    assert not leftovers, leftovers


def assert_store_consistent(root: Path) -> None:
    """Every version is whole and checks out, `ls --check` finds no damage, and every cache
    entry verifies: what a killed or concurrent build must leave."""
    from ethosu_build.store.artifacts import ArtifactStore, check
    from ethosu_build.store.cache import StageCache

    store = ArtifactStore(root)
    for artifact in store.all():
        assert check(artifact).problems == [], artifact.id
    assert [f for f in store.scan() if f.damage] == []
    cache = StageCache(root)
    for key in cache.keys():
        assert cache.get(key) is not None, key  # no entry that reads as valid is half-written


@pytest.fixture(scope="session", autouse=True)
def store_key_file(tmp_path_factory) -> Path:
    """The tests' own store key (store/trust.py), not the user's: builds in this process and
    in the CLI subprocesses the tests start sign and verify with it."""
    from ethosu_build.store.trust import KEY_ENV

    path = new_key_file(tmp_path_factory.mktemp("key"))
    os.environ[KEY_ENV] = str(path)
    return path


@pytest.fixture(scope="session")
def digits_store(tmp_path_factory) -> Path:
    """A store holding digits_cnn/v1 and other/v1 (the same stages, computed once per test
    process), built on few samples. Tests that change or attack a store copy it first
    (`store_copy`)."""
    root = tmp_path_factory.mktemp("digits") / "store"
    few = ["calibration.num_samples=16", *FEW_EVALUATED]
    build_in_process(few, root)
    build_in_process([*few, "name=other"], root)
    return root


@pytest.fixture
def store_copy(digits_store, tmp_path) -> Path:
    """A copy of `digits_store` for one test to change."""
    root = tmp_path / "store"
    shutil.copytree(digits_store, root, symlinks=True)
    return root


def new_key_file(folder: Path, name: str = "store.key") -> Path:
    """A fresh store key as a user keeps one: 32 random bytes, mode 0600 (a missing
    ETHOSU_BUILD_KEY_FILE is an error, never a new key)."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """One warm build service for the whole run (docs/warm.md), started by the controlling
    process before the xdist workers, which inherit its runtime directory: the tests' CLI
    builds go through it, as a user's would, and do not pay torch's import each. A developer's
    own service is never used (a runtime directory of the run's own). ETHOSU_BUILD_WARM=off
    runs every CLI build in its own process instead."""
    if hasattr(session.config, "workerinput"):
        return
    from ethosu_build import warm

    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="xdg")
    if warm.mode() != "off":
        started = subprocess.run([str(BIN / "ethosu-build"), "--warm", "start", "--idle", "1800"], text=True)
        if started.returncode:  # the tests still run, each CLI build in its own process
            print("no warm build service for this run: the CLI builds run in their own processes")


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    status = subprocess.run([str(BIN / "ethosu-build"), "--warm", "status"], capture_output=True, text=True)
    if status.returncode == 0:  # how many of the run's builds went through the service
        print("\nwarm build service:", ", ".join(status.stdout.splitlines()[:4]))
        subprocess.run([str(BIN / "ethosu-build"), "--warm", "stop"], capture_output=True)
    shutil.rmtree(os.environ["XDG_RUNTIME_DIR"], ignore_errors=True)


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
