"""Recipes that can be traced: git state in the manifest, uncommitted recipes refused, locks
that catch drift, and every committed recipe rebuilding its artifact byte for byte."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import FEW_EVALUATED, ROOT, SIMULATED_MACHINES, manifest, published_sha, run_cli

from ethosu_build.fingerprint import file_sha256

ARGS = ["hydra.searchpath=[file://conf]", "recipe=tiny_u85", "store.root=store"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def git_repo(user_repo):
    git(user_repo, "init", "-q")
    git(user_repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A")
    git(user_repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "recipes")
    return user_repo


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_manifest_records_the_recipe_commit_and_refuses_an_uncommitted_recipe(git_repo):
    ok = run_cli(ARGS, git_repo)
    assert ok.returncode == 0, ok.stderr[-2000:]
    prov = manifest(git_repo / "store" / "artifacts" / "tiny_u85" / "v1")["provenance"]
    assert prov["git"]["commit"] == git(git_repo, "rev-parse", "HEAD")
    assert prov["git"]["file"] == "conf/recipe/tiny_u85.yaml" and prov["git"]["file_dirty"] is False
    assert Path(prov["recipe_file"]) == (git_repo / "conf" / "recipe" / "tiny_u85.yaml").resolve()

    recipe = git_repo / "conf" / "recipe" / "tiny_u85.yaml"
    recipe.write_text(recipe.read_text().replace("width: 12", "width: 10"))
    refused = run_cli(ARGS, git_repo)
    assert refused.returncode == 2
    assert (
        "recipe" in refused.stderr and "uncommitted changes" in refused.stderr and "allow_dirty=true" in refused.stderr
    )
    assert not (git_repo / "store" / "artifacts" / "tiny_u85" / "v2").exists()
    allowed = run_cli([*ARGS, "allow_dirty=true"], git_repo)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert manifest(git_repo / "store" / "artifacts" / "tiny_u85" / "v2")["provenance"]["git"]["file_dirty"] is True


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_lock_drift_warns_and_fails_under_strict(user_repo):
    lock = run_cli(["lock", "tiny_u85", "--searchpath", "conf"], user_repo, tool="ethosu-artifacts")
    assert lock.returncode == 0, lock.stderr
    content = json.loads((user_repo / "conf" / "recipe" / "tiny_u85.lock.json").read_text())
    assert content["tools"]["executorch"] and content["fingerprints"]["model_source"]["sha256"]
    clean = run_cli(ARGS, user_repo)
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert manifest(user_repo / "store" / "artifacts" / "tiny_u85" / "v1")["provenance"]["lock"]["drift"] == []

    nets = user_repo / "mymodels" / "nets.py"
    nets.write_text(nets.read_text() + "\n# an edit to the model code\n")
    strict = run_cli([*ARGS, "strict=true"], user_repo)
    assert (
        strict.returncode == 1
        and "drifted from tiny_u85.lock.json" in strict.stderr
        and "model_source" in strict.stderr
    )
    warned = run_cli(ARGS, user_repo)
    assert warned.returncode == 0
    assert "drift from tiny_u85.lock.json: input model_source" in warned.stdout + warned.stderr
    assert manifest(user_repo / "store" / "artifacts" / "tiny_u85" / "v2")["provenance"]["lock"]["drift"]


RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
VERIFIED = "digits_u55"  # built here as committed, then verified on a simulated machine


@pytest.mark.slow
@pytest.mark.parametrize("machine", SIMULATED_MACHINES)
def test_committed_recipes_build_their_published_bytes_on_another_machine(machine, tmp_path):
    """Each simulated machine builds its half of the committed recipes in one multirun (one
    process, so one import of torch per machine; a sweep's jobs give the bytes of single
    builds) and every artifact holds the sha256 docs/recipes.md publishes (this host's and
    CI's). The evaluation is not part of the program's bytes: few samples, to keep the
    suite's time."""
    half = RECIPES[list(SIMULATED_MACHINES).index(machine) :: len(SIMULATED_MACHINES)]
    recipes = [r for r in half if r != VERIFIED]
    built = run_cli(["-m", f"recipe={','.join(recipes)}", *FEW_EVALUATED], tmp_path, env=SIMULATED_MACHINES[machine])
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    for recipe in recipes:
        (pte,) = (tmp_path / "outputs" / "artifacts" / recipe).rglob("model.pte")
        assert file_sha256(pte).startswith(published_sha(recipe)), recipe


@pytest.mark.slow
def test_a_recipe_built_here_verifies_on_another_machine(tmp_path):
    """The recipe built here as committed (evaluation included) holds its published bytes,
    and `verify` rebuilds it on a simulated AVX2 machine with 4 threads: MATCH."""
    built = run_cli([f"recipe={VERIFIED}"], tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    (pte,) = (tmp_path / "outputs" / "artifacts").rglob("model.pte")
    assert file_sha256(pte).startswith(published_sha(VERIFIED))
    verified = run_cli(
        ["verify", "--recipe", VERIFIED], tmp_path, tool="ethosu-artifacts", env=SIMULATED_MACHINES["avx2, 4 threads"]
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr[-2000:]
    assert verified.stdout.startswith("MATCH")
