"""The store is a trust boundary (docs/trust.md): store commands touch nothing outside it,
a build never runs, reads or copies what a store writer planted, and a damaged artifact is
never taken as good."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import build_in_process, compose_config, flock_held, manifest, run_cli

from ethosu_build.config.validate import validate
from ethosu_build.fingerprint import file_sha256
from ethosu_build.pipeline.keys import stage_keys
from ethosu_build.store.artifacts import ArtifactStore

QUICK = ["calibration.num_samples=16", "evaluation.num_samples=32", "evaluation.tosa_samples=4"]


def artifacts_cli(args, root: Path, cwd: Path | None = None):
    return run_cli(["--root", str(root), *args], cwd or root.parent, tool="ethosu-artifacts")


class _Marker:
    """Unpickling this writes a file: proof that code from the store ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code from the store ran')",))


def plant_pickled_program(entry: Path, name: str, marker: Path) -> None:
    """Rewrite a cached torch.export archive so that loading it unpickles _Marker, and
    update entry.json's sha256 as anyone who can write the store could."""
    archive = entry / name
    src = zipfile.ZipFile(io.BytesIO(archive.read_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("weights/model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                planted = f"{info.filename.rsplit('/', 1)[0]}/{first['path_name']}"
                data = json.dumps(config).encode()
            dst.writestr(info, data)
        dst.writestr(planted + ".x", b"")  # keeps the zip valid; the payload follows
    names = zipfile.ZipFile(io.BytesIO(out.getvalue())).namelist()
    assert planted in names
    # Replace the weight's bytes with the pickle (a second pass: writestr cannot overwrite).
    final = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as mid, zipfile.ZipFile(final, "w") as dst:
        for info in mid.infolist():
            dst.writestr(info, pickle.dumps(_Marker(str(marker))) if info.filename == planted else mid.read(info))
    archive.write_bytes(final.getvalue())
    meta = json.loads((entry / "entry.json").read_text())
    meta["files"][name] = file_sha256(archive)
    (entry / "entry.json").write_text(json.dumps(meta))


def entry_dir(root: Path, key: str) -> Path:
    from ethosu_build.store.cache import StageCache

    return StageCache(root).path(key)


@pytest.mark.slow
def test_a_hostile_store_is_neither_run_nor_read_nor_copied(tmp_path):
    """A store writer plants a pickled program in the quantize entry, and a symlink (to a
    secret and to a FIFO, which would hang any reader) and a stray file in the vela entry.
    The next builds run none of it, read none of it, and copy none of it."""
    root = tmp_path / "store"
    first = build_in_process(QUICK, root)
    keys = first.artifact.manifest()["stage_keys"]
    marker = tmp_path / "PWNED"
    plant_pickled_program(entry_dir(root, keys["quantize"]), "program.pt2", marker)
    vela_entry = entry_dir(root, keys["vela"])
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (vela_entry / "leak.csv").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    (vela_entry / "fifo.tosa").symlink_to(tmp_path / "fifo")
    (vela_entry / "stray.tosa").write_bytes(b"planted")

    # the same vela entry, published under another name; a new lowering reads the quantize entry
    res = run_cli([f"store.root={root}", "name=again", *QUICK], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    res2 = run_cli([f"store.root={root}", "target.cpu_qdq_kernels=portable", *QUICK], tmp_path)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert not marker.exists()
    log = res2.stdout + res2.stderr
    assert log.count("not trusted") == 1 and keys["quantize"][:12] in log  # one line, then rebuilt
    again = manifest(root / "artifacts" / "again" / "v1")
    assert set(again["files"]) == {
        "model.pte",
        "config.yaml",
        "report.md",
        *(f"vela/{n}" for n in ("summary.csv", "per_layer.csv", "part0.tosa")),
        "check/tosa_io.npz",
    }
    assert not any(p.is_symlink() or p.name in ("leak.csv", "stray.tosa") for p in (root / "artifacts").rglob("*"))
    portable = manifest(root / "artifacts" / "digits_cnn" / "v2")
    assert portable["stages"]["quantize"]["status"] == "ran"  # discarded and computed again
    # and the rebuilt entry gives the bytes a fresh store gives
    fresh = build_in_process([*QUICK, "target.cpu_qdq_kernels=portable"], tmp_path / "fresh")
    assert portable["files"]["model.pte"]["sha256"] == fresh.artifact.manifest()["files"]["model.pte"]["sha256"]


def test_an_entry_that_does_not_load_is_rebuilt(tmp_path):
    """A signed entry whose program no longer loads (a torch that reads it differently) is
    discarded with one line and computed again, never a traceback."""
    from ethosu_build.store.cache import StageCache

    root = tmp_path / "store"
    first = build_in_process(QUICK, root)
    key = first.artifact.manifest()["stage_keys"]["quantize"]
    cache = StageCache(root)
    entry = cache.get(key)
    files = {n: entry.read(n) for n in entry.files}
    shutil.rmtree(entry.path)
    with cache.put(key, "quantize") as folder:  # signed by our own key, but not a program
        for n, blob in files.items():
            (folder / n).write_bytes(b"not a zip" if n == "program.pt2" else blob)
    again = build_in_process([*QUICK, "target.cpu_qdq_kernels=portable"], root)
    assert again.stages["quantize"]["status"] == "ran"


def test_store_commands_refuse_paths_outside_the_store(tmp_path):
    root = tmp_path / "store"
    built = build_in_process(QUICK, root).artifact
    project = tmp_path / "fw_project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    refused = artifacts_cli(["export", built.id, str(project)], root)  # not empty: only with --force
    assert refused.returncode == 2 and "is not empty (src)" in refused.stderr and not (project / "model.pte").exists()
    assert artifacts_cli(["export", built.id, str(project), "--force"], root).returncode == 0
    assert (project / "manifest.json").is_file()
    for args in (
        ["gc", "--artifact", str(project)],
        ["show", str(project)],  # (diff takes an exported folder: tests/test_trust_rule.py)
        ["export", str(project), str(tmp_path / "x")],
        ["verify", str(project)],
    ):
        res = artifacts_cli(args, root)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "not an artifact of the store" in res.stderr and "Traceback" not in res.stderr
    assert (project / "src" / "main.c").is_file() and built.path.is_dir()
    # the version's own path is one, as it was
    assert artifacts_cli(["show", str(built.path), "--json"], root).returncode == 0
    # export into the store is refused
    res = artifacts_cli(["export", built.id, str(built.path / "fw")], root)
    assert res.returncode == 2 and "inside the store" in res.stderr and not (built.path / "fw").exists()


def test_gc_unlinks_symlinks_in_the_store_and_never_empties_their_targets(tmp_path):
    root = tmp_path / "store"
    build_in_process(QUICK, root)
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("keep me")
    (precious / ".staging-old").mkdir()
    (root / "cache" / "zz").symlink_to(precious)
    (root / "artifacts" / "linked").symlink_to(precious)
    (root / "artifacts" / "digits_cnn" / "v7").symlink_to(precious)
    old = 2 * 3600
    os.utime(precious / ".staging-old", (os.path.getmtime(precious) - old,) * 2)
    res = artifacts_cli(["gc"], root)
    assert res.returncode == 0, res.stderr
    assert (
        (precious / "notes.txt").read_text() == "keep me"
        and (precious / "sub").is_dir()
        and (precious / ".staging-old").is_dir()
    )
    assert not any(p.is_symlink() for p in root.rglob("*"))
    assert [a.id for a in ArtifactStore(root).all()] == ["digits_cnn/v1"]


def test_a_damaged_artifact_is_not_up_to_date_and_is_reported(tmp_path):
    root = tmp_path / "store"
    v1 = build_in_process(QUICK, root).artifact.path
    good = (v1 / "model.pte").read_bytes()
    with open(v1 / "model.pte", "r+b") as f:
        f.truncate(100)
    check = artifacts_cli(["ls", "--check"], root)
    assert check.returncode == 1 and "model.pte" in check.stdout + check.stderr
    again = run_cli([f"store.root={root}", *QUICK], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    log = again.stdout + again.stderr
    assert "up to date" not in log and "digits_cnn/v1 has this build key but is not trusted" in log
    assert (root / "artifacts" / "digits_cnn" / "v2" / "model.pte").read_bytes() == good  # rebuilt from the cache


def test_half_present_and_unreadable_versions_are_reported_and_never_block(tmp_path):
    root = tmp_path / "store"
    base = build_in_process(QUICK, root).artifact.path.parent
    (base / "v2").mkdir()
    (base / "v2" / "model.pte").write_bytes(b"half")
    check = artifacts_cli(["ls", "--check"], root)
    assert check.returncode == 1 and "digits_cnn/v2" in check.stderr and "half-present" in check.stderr
    assert build_in_process(["calibration.num_samples=17", *QUICK[1:]], root).artifact.path == base / "v3"
    (base / "v1" / "manifest.json").write_text("{not json")
    check = artifacts_cli(["ls", "--check"], root)
    assert check.returncode == 1 and "unreadable" in check.stdout + check.stderr
    gc = artifacts_cli(["gc"], root)
    assert gc.returncode == 0 and "digits_cnn/v2" in gc.stdout and not (base / "v2").exists()
    assert (base / "v1").is_dir()  # a version with a damaged manifest is reported, removed only when named


def test_vela_flags_are_checked_before_any_stage(tmp_path):
    for flags, fragment in (
        (["--version"], "prints Vela's version and exits"),
        (["--no-such-flag"], "not a Vela 5.1.0 option"),
        (["--optim=Size"], "abbreviates --optimise"),
        (["--conf=my.ini"], "abbreviates --config"),
        (["--supported-ops-report"], "writes SUPPORTED_OPS.md"),
        (["--cpu-tensor-alignment=12"], "a power of two >= 16"),
        (["--separate-io-regions"], "needs --cop-format=COP2"),
    ):
        res = run_cli([f"target.vela_flags={json.dumps(flags)}", "store.root=store"], tmp_path)
        assert res.returncode == 2, (flags, res.stderr[-2000:])
        assert "target.vela_flags" in res.stderr and fragment in res.stderr, (flags, res.stderr)
        assert not (tmp_path / "store").exists() and not (tmp_path / "SUPPORTED_OPS.md").exists()


USER_CODE = """
import sys
import torch

class Exits:
    def __len__(self):
        return 64
    def __getitem__(self, i):
        if i == 20:
            sys.exit(3)
        return torch.zeros(1, 8, 8)

def exits_on_read(**kwargs):
    return Exits()
"""


@pytest.mark.slow
def test_user_code_that_exits_ends_in_an_error_and_the_sweep_goes_on(tmp_path):
    (tmp_path / "userdata.py").write_text(USER_CODE)
    res = run_cli(
        ["store.root=store", "calibration.dataset={_target_: userdata.exits_on_read}", "calibration.num_samples=32"],
        tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "calibration.dataset" in res.stderr and "item 20" in res.stderr and "sys.exit" in res.stderr
    sweep = run_cli(
        [
            "-m",
            "store.root=store",
            "hydra.sweep.dir=sweep",
            *QUICK[1:],
            "calibration.dataset={_target_: userdata.exits_on_read},{_target_: ethosu_build.data.digits}",
            "calibration.num_samples=32",
        ],
        tmp_path,
    )
    assert sweep.returncode == 2, sweep.stderr[-3000:]
    rows = (tmp_path / "sweep" / "summary.csv").read_text()
    assert "config_error" in rows and "built" in rows


@pytest.mark.parametrize("bad", ["", "null", "somefile"])
def test_store_root_is_checked_before_anything_is_written(tmp_path, bad):
    (tmp_path / "somefile").write_text("x")
    res = run_cli([f"store.root={bad}", "calibration.num_samples=8"], tmp_path)
    assert res.returncode == 2 and "store.root" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]
    sweep = run_cli(["-m", f"store.root={bad}", "target=ethos-u55-128,ethos-u85-256"], tmp_path)
    assert sweep.returncode == 2 and "store.root" in sweep.stderr, sweep.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"]


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_store_root_with_a_tilde_means_the_home_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    res = run_cli(
        ["store.root='~/ethosu'", "calibration.num_samples=8", "evaluation.num_samples=8", "evaluation.tosa_samples=1"],
        tmp_path,
        env={"HOME": str(home)},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (home / "ethosu" / "artifacts" / "digits_cnn" / "v1" / "model.pte").is_file()
    assert list((home / "ethosu" / "runs").iterdir())  # Hydra's run dir went there too
    assert not (tmp_path / "~").exists()


def test_a_model_check_config_error_leaves_nothing_in_the_store(tmp_path):
    res = run_cli(["store.root=store", "calibration.num_samples=5000"], tmp_path)
    assert res.returncode == 2 and "calibration.num_samples" in res.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*")), list(
        (tmp_path / "store").rglob("*")
    )
    res = run_cli(["store.root=store", "evaluation=random", "budget.max_accuracy_drop=1"], tmp_path)
    assert res.returncode == 2 and "budget.max_accuracy_drop" in res.stderr and "no labels" in res.stderr
    assert ": running" not in res.stdout + res.stderr  # found before any stage
    assert not any((tmp_path / "store").rglob("*"))


def test_the_data_path_spelling_never_enters_a_key(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fx").mkdir()
    np.savez(tmp_path / "fx" / "good.npz", inputs=np.random.RandomState(0).rand(8, 1, 8, 8).astype("float32"))
    shutil.copyfile(tmp_path / "fx" / "good.npz", tmp_path / "copy.npz")
    keys = set()
    for path in ("fx/good.npz", "./fx/good.npz", str(tmp_path / "fx" / "good.npz"), "copy.npz", "fx/../fx/good.npz"):
        container, _ = compose_config(
            ["calibration=tensors", f"calibration.dataset.path={path}", f"store.root={tmp_path}"]
        )
        keys.add(stage_keys(validate(container)).quantize)
    assert len(keys) == 1
    np.savez(tmp_path / "copy.npz", inputs=np.zeros((8, 1, 8, 8), dtype="float32"))
    container, _ = compose_config(
        ["calibration=tensors", "calibration.dataset.path=copy.npz", f"store.root={tmp_path}"]
    )
    assert stage_keys(validate(container)).quantize not in keys  # the content does enter it


def test_a_git_ignored_recipe_is_not_committed(user_repo):
    def git(*args):
        subprocess.run(
            ["git", "-C", str(user_repo), "-c", "user.email=t@t", "-c", "user.name=t", *args],
            check=True,
            capture_output=True,
        )

    (user_repo / ".gitignore").write_text("conf/recipe/tiny_u85.yaml\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "everything but the recipe")
    args = ["hydra.searchpath=[file://conf]", "recipe=tiny_u85", "store.root=store"]
    res = run_cli(args, user_repo)
    assert res.returncode == 2 and "is not committed" in res.stderr and "allow_dirty=true" in res.stderr, res.stderr
    assert not (user_repo / "store").exists() or not any((user_repo / "store").rglob("manifest.json"))


EXITS_ON_SECOND_CALL = """
import sys
import torch

class Net(torch.nn.Module):
    calls = 0

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        Net.calls += 1
        if Net.calls == 2:  # the model check runs it once; torch.export traces it again
            sys.exit(4)
        return self.fc(x.flatten(1))

def net():
    return Net()
"""


def test_sys_exit_inside_a_stage_is_a_failed_build_naming_the_stage(tmp_path):
    (tmp_path / "exiting.py").write_text(EXITS_ON_SECOND_CALL)
    res = run_cli(["store.root=store", "model.factory._target_=exiting.net", "calibration.num_samples=8"], tmp_path)
    assert res.returncode == 1, res.stderr[-2000:]
    assert (
        "export stage: stopped by sys.exit(4)" in res.stderr
        and "exiting.py" in res.stderr
        and "Traceback" not in res.stderr
    )
    assert not any((tmp_path / "store" / "artifacts").rglob("manifest.json"))


def test_a_full_disk_is_a_failed_build_and_stores_nothing(tmp_path, monkeypatch):
    import contextlib
    import errno

    from ethosu_build.errors import BuildError
    from ethosu_build.store.cache import StageCache

    @contextlib.contextmanager
    def full(self, key, stage):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path(key)))
        yield

    monkeypatch.setattr(StageCache, "put", full)
    with pytest.raises(BuildError, match="no space left on the device"):
        build_in_process(["calibration.num_samples=8"], tmp_path / "store")
    assert list(ArtifactStore(tmp_path / "store").all()) == []


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_a_rewrite_that_finds_nothing_is_reported(tmp_path):
    """digits_cnn has no average pool: avg_pool_crop has nothing to do, and says so."""
    res = run_cli(["store.root=store", "lowering.rewrites=[avg_pool_crop]", *QUICK], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "avg_pool_crop found nothing to rewrite" in res.stdout + res.stderr
    m = manifest(tmp_path / "store" / "artifacts" / "digits_cnn" / "v1")
    assert m["lowering"]["unmatched"] == ["avg_pool_crop"] and m["lowering"]["rewrites"] == []
    assert (
        "found nothing to rewrite: avg_pool_crop"
        in (tmp_path / "store" / "artifacts" / "digits_cnn" / "v1" / "report.md").read_text()
    )


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_lock_file_that_is_not_one_is_replaced_never_followed(kind, tmp_path):
    """A hostile store's <key>.lock: a link to a file outside the store (which must be
    neither truncated nor locked), a FIFO (which must not block), or a folder."""
    from ethosu_build.store.cache import StageCache

    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    cache, key = StageCache(tmp_path / "store"), "ab" * 32
    path = cache.path(key).with_name(f"{key}.lock")
    path.parent.mkdir(parents=True)
    if kind == "symlink":
        path.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        (path / "inside").mkdir(parents=True)
    with cache.claim(key, "export"):
        assert path.is_file() and not path.is_symlink() and flock_held(path)
    assert outside.read_text() == "precious" and not flock_held(outside) and not flock_held(path)
