"""ethosu-artifacts: check, verify (rebuild and compare), diff, export, gc."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FEW_EVALUATED, build_in_process, run_cli

from ethosu_build.models import DIGITS_CNN_WEIGHTS
from ethosu_build.store.cache import StageCache


def cli(args, root, **kw):
    return run_cli(["--root", str(root), *args], root, tool="ethosu-artifacts", **kw)


def _flip_a_weight_byte(path):
    """Change one byte inside a stored tensor (not the zip structure), so the file still loads:
    the sign byte of the first head bias, which the quantized program cannot ignore."""
    import torch

    data = bytearray(path.read_bytes())
    bias = torch.load(path, weights_only=True)["head.bias"].numpy().tobytes()
    at = data.find(bias)
    assert at > 0
    data[at + 3] ^= 0x80  # little-endian float32: byte 3 holds the sign
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_verify_matches_then_names_the_changed_weights(tmp_path):
    weights = tmp_path / "weights.pt"
    shutil.copyfile(DIGITS_CNN_WEIGHTS, weights)
    overrides = [
        "+model.factory.pretrained=false",
        f"model.checkpoint={weights}",
        "calibration.num_samples=32",
        *FEW_EVALUATED,  # verify builds twice more with the artifact's config
    ]
    built = build_in_process(overrides, tmp_path / "store").artifact
    ok = cli(["verify", built.id], tmp_path / "store")
    assert ok.returncode == 0, ok.stdout + ok.stderr[-2000:]
    assert ok.stdout.startswith("MATCH")

    _flip_a_weight_byte(weights)
    changed = cli(["verify", built.id], tmp_path / "store")
    assert changed.returncode == 1, changed.stdout + changed.stderr[-2000:]
    assert changed.stdout.startswith("DIFFERS") and "model weights (checkpoint)" in changed.stdout
    assert ": different (first cause: constants:" in changed.stdout  # the semantic diff of what it rebuilt
    assert "model source" not in changed.stdout and "tool version" not in changed.stdout


def test_check_finds_bytes_changed_on_disk(tmp_path):
    built = build_in_process(["calibration.num_samples=16"], tmp_path).artifact
    clean = cli(["ls", "--check", "--json"], tmp_path)
    assert clean.returncode == 0 and json.loads(clean.stdout)[0]["check"] == "ok"
    pte = built.path / "model.pte"
    data = bytearray(pte.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pte.write_bytes(bytes(data))
    damaged = cli(["ls", "--check", "--json"], tmp_path)
    assert damaged.returncode == 1
    assert "model.pte: sha256 differs" in json.loads(damaged.stdout)[0]["check"]
    verify = cli(["verify", built.id], tmp_path)  # refused: a damaged artifact's config is never built
    assert verify.returncode == 2 and "changed on disk" in verify.stderr
    fw = tmp_path.parent / f"{tmp_path.name}-fw"  # outside the store (tmp_path is its root)
    export = cli(["export", built.id, str(fw)], tmp_path)
    assert export.returncode == 2 and "sha256 differs" in export.stderr and not fw.exists()


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_diff_export_and_gc(tmp_path):
    a = build_in_process(["calibration.num_samples=16"], tmp_path).artifact
    b = build_in_process(["calibration.num_samples=16", "target=ethos-u85-256"], tmp_path).artifact
    diff = cli(["diff", a.id, b.id], tmp_path)
    assert diff.returncode == 1  # exit 0 only for identical bytes
    assert ": different (first cause: vela: compiled for accelerator ethos-u55-128 vs ethos-u85-256)" in diff.stdout
    assert "config.target.accelerator: ethos-u55-128 -> ethos-u85-256" in diff.stdout and "cycles:" in diff.stdout

    fw = tmp_path.parent / f"{tmp_path.name}-fw"  # outside the store (tmp_path is its root)
    export = cli(["export", a.id, str(fw)], tmp_path)
    assert export.returncode == 0
    assert (fw / "model.pte").read_bytes() == (a.path / "model.pte").read_bytes()
    assert json.loads((fw / "manifest.json").read_text())["build_key"] == a.manifest()["build_key"]

    cache = StageCache(tmp_path)
    before = set(cache.keys())
    keys_a, keys_b = set(a.manifest()["stage_keys"].values()), set(b.manifest()["stage_keys"].values())
    stray = cache.path("f" * 64)  # an entry no artifact rests on
    stray.mkdir(parents=True)
    dry = cli(["gc", "--dry-run"], tmp_path)
    assert dry.returncode == 0 and "would remove 1 cache entry" in dry.stdout
    assert set(cache.keys()) == before | {stray.name}
    gone = cli(["gc", "--artifact", a.id], tmp_path)
    assert gone.returncode == 0
    assert not a.path.exists() and b.path.exists()  # only the named artifact
    left = set(cache.keys())
    assert keys_b & before <= left  # b's stages stay
    assert not (keys_a - keys_b) & left and stray.name not in left
