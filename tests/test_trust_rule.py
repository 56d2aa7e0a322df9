"""The one rule of trust (docs/trust.md): an artifact is trusted only when this user's key
signed its manifest, the manifest names the place it sits in, and its files are the ones it
lists. Tried as a hostile co-worker (write access to the store, no key) and a careless user
would: each case below was a way round the rule on an earlier main."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FEW_EVALUATED, build_in_process, new_key_file, run_cli

from ethosu_build.fingerprint import sha256_bytes
from ethosu_build.store.artifacts import ArtifactStore
from ethosu_build.store.cache import StageCache
from ethosu_build.store.trust import KEY_ENV

QUICK = ["calibration.num_samples=16", *FEW_EVALUATED]


@pytest.fixture
def store(store_copy) -> Path:
    """digits_cnn/v1 and other/v1 (conftest.digits_store), this test's own copy."""
    return store_copy


def cli(args, root: Path, env: dict | None = None):
    return run_cli(["--root", str(root), *args], root.parent, tool="ethosu-artifacts", env=env)


def unsign_and_rewrite(version: Path, edit) -> None:
    """What anyone who can write the store can do: change files, fix their sha256 in the
    manifest, edit the manifest, drop the signature it can no longer carry."""
    m = json.loads((version / "manifest.json").read_text())
    edit(m)
    for name in m["files"]:
        m["files"][name]["sha256"] = sha256_bytes((version / name).read_bytes())
    m.pop("signature")
    (version / "manifest.json").write_text(json.dumps(m))


def test_verify_never_runs_the_config_of_an_artifact_this_key_did_not_sign(store, tmp_path):
    marker = tmp_path / "PWNED"
    planted = store / "evil.py"  # any code: a module, or torch.load of a pickle
    planted.write_text(f"open({str(marker)!r}, 'w').write('ran')\ndef make(): pass\n")
    v1 = store / "artifacts" / "digits_cnn" / "v1"
    config = v1 / "config.yaml"
    config.write_text(config.read_text().replace("ethosu_build.models.digits_cnn", "evil.make"))

    def point_at_evil(m):
        m["config"]["model"]["factory"]["_target_"] = "evil.make"

    unsign_and_rewrite(v1, point_at_evil)
    ls = cli(["ls", "--check"], store)
    assert ls.returncode == 1 and "untrusted: digits_cnn/v1: its manifest is unsigned" in ls.stderr
    listed = cli(["ls"], store)  # a plain listing checks every manifest's signature too, and marks it
    assert listed.returncode == 0 and "digits_cnn/v1 (untrusted)" in listed.stdout
    assert "other/v1 (untrusted)" not in listed.stdout
    verify = cli(["verify", "digits_cnn/v1"], store, env={"PYTHONPATH": str(store)})
    assert verify.returncode == 2, verify.stdout + verify.stderr
    assert "not rebuilding digits_cnn/v1" in verify.stderr and "--recipe" in verify.stderr
    assert "Traceback" not in verify.stderr and not marker.exists()


def test_a_signature_is_bound_to_its_name_and_version(store, tmp_path):
    arts = store / "artifacts"
    subprocess.run(["cp", "-a", str(arts / "other" / "v1"), str(arts / "digits_cnn" / "v4")], check=True)
    subprocess.run(["cp", "-a", str(arts / "digits_cnn" / "v1"), str(arts / "digits_cnn" / "v5")], check=True)
    ls = cli(["ls", "--check"], store)
    assert ls.returncode == 1
    assert "digits_cnn/v4: manifest.json: written for 'other'/v1, found at digits_cnn/v4" in ls.stderr
    assert "digits_cnn/v5: manifest.json: written for 'digits_cnn'/v1" in ls.stderr  # a silent rollback
    for args in (
        ["show", "digits_cnn"],
        ["show", "digits_cnn/v4", "--json"],
        ["export", "digits_cnn", str(tmp_path / "x")],
    ):
        res = cli(args, store)
        assert res.returncode == 2 and "copied or renamed" in res.stderr, (args, res.stdout, res.stderr)
    assert not (tmp_path / "x").exists()


def test_diff_show_and_export_check_before_they_print_or_copy(store, tmp_path):
    v1 = store / "artifacts" / "digits_cnn" / "v1"
    other = store / "artifacts" / "other" / "v1"
    with open(other / "model.pte", "r+b") as f:
        f.truncate(10)
    res = cli(["diff", "digits_cnn/v1", "other/v1"], store)
    assert res.returncode == 2 and "identical" not in res.stdout
    assert "B: not comparing other/v1: it is not trusted (model.pte: sha256 differs" in res.stderr
    # a manifest edited after signing, signature kept: damage, refused
    m = json.loads((v1 / "manifest.json").read_text())
    m["metrics"]["vela"]["total"]["inference_ms"] = 0.0001
    (v1 / "manifest.json").write_text(json.dumps(m))
    res = cli(["show", "digits_cnn/v1"], store)
    assert res.returncode == 2 and "changed since it was signed" in res.stderr and "0.0001" not in res.stdout
    # edited and unsigned: shown only under a warning, and the exit code says so
    unsign_and_rewrite(v1, lambda m: None)
    res = cli(["show", "digits_cnn/v1", "--json"], store)
    assert res.returncode == 1 and "warning: digits_cnn/v1 is not trusted (its manifest is unsigned)" in res.stderr
    res = cli(["export", "digits_cnn/v1", str(tmp_path / "out")], store)
    assert res.returncode == 2 and "not exporting" in res.stderr and not (tmp_path / "out").exists()


def test_diff_compares_across_stores_and_exports_signed_by_another_key(store, tmp_path):
    exported = tmp_path / "ci_build"
    assert cli(["export", "digits_cnn/v1", str(exported)], store).returncode == 0
    assert (exported / "vela" / "part0.tosa").is_file()  # an export is the whole version
    elsewhere = {KEY_ENV: str(new_key_file(tmp_path, "laptop.key"))}  # another machine's key
    res = cli(["diff", str(exported), "other/v1"], store, env=elsewhere)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ": identical" in res.stdout and res.stdout.count("is not signed here") == 2
    as_json = json.loads(cli(["diff", str(exported), "digits_cnn/v1", "--json"], store).stdout)
    assert as_json["verdict"] == "identical" and set(as_json["signed"].values()) == {"signed by your key"}
    (exported / "model.pte").write_bytes(b"other bytes")
    res = cli(["diff", str(exported), "other/v1"], store, env=elsewhere)
    assert res.returncode == 2 and "A: not comparing" in res.stderr and "model.pte: sha256 differs" in res.stderr


def _no_traceback(res):
    assert "Traceback" not in res.stderr and "a bug in ethosu-build" not in res.stderr, res.stderr
    return res


@pytest.mark.parametrize(
    "setup, says",
    [
        ("group_readable", "is accessible by group or others (mode 0640)"),
        ("other_owner", "is owned by uid 65534"),
        ("inside_store", "lies inside the store"),
        ("missing", "does not exist"),
        ("fifo", "is a FIFO, socket or device"),
        ("folder", "is a folder"),
        ("symlink_to_loose", "is accessible by group or others (mode 0644)"),  # a link: its target is checked
    ],
)
def test_the_key_file_is_checked_as_ssh_checks_a_private_key(store, tmp_path, setup, says):
    key = tmp_path / "keys" / "store.key"
    key.parent.mkdir()
    if setup == "inside_store":
        key = new_key_file(store / "cache")
    elif setup == "fifo":
        os.mkfifo(key, 0o600)
    elif setup == "folder":
        key.mkdir(mode=0o700)
    elif setup == "symlink_to_loose":
        target = new_key_file(tmp_path)
        target.chmod(0o644)
        key.symlink_to(target)
    elif setup != "missing":
        new_key_file(key.parent)
        if setup == "group_readable":
            key.chmod(0o640)
        if setup == "other_owner":
            if os.geteuid() != 0:
                pytest.skip("chown to another user needs root")
            os.chown(key, 65534, 65534)
    env = {KEY_ENV: str(key)}
    for args in (["ls", "--check"], ["ls"], ["gc", "--dry-run"]):
        res = _no_traceback(cli(args, store, env))  # a FIFO must not hang it (run_cli's timeout)
        assert res.returncode == 2 and f"{KEY_ENV}: the store key" in res.stderr and says in res.stderr, res.stderr
    build = _no_traceback(run_cli([f"store.root={store}", *QUICK], tmp_path, env=env))
    assert build.returncode == 2 and says in build.stderr
    if setup == "missing":
        assert not key.exists() and not key.parent.joinpath(".store.key").exists()  # never a new key


def test_gc_never_removes_what_a_running_build_holds(store, tmp_path):
    cache = StageCache(store)
    held = next(iter(cache.keys()))
    for a in list(ArtifactStore(store).all()):  # nothing refers to the entries any more
        shutil.rmtree(a.path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom ethosu_build.store.cache import StageCache\n"
            f"with StageCache({str(store)!r}).pin([{held!r}]):\n    print('pinned', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "pinned"
        assert cli(["gc"], store).returncode == 0
        assert cache.keys() == [held] and cache.get(held) is not None
    finally:
        holder.kill()
        holder.wait()
    pins = list((store / "cache" / ".pins").iterdir())
    assert len(pins) == 1  # a killed build's pin: no process holds it, so it protects nothing
    assert cli(["gc"], store).returncode == 0
    assert cache.keys() == [] and not any((store / "cache" / ".pins").iterdir())


@pytest.mark.parametrize("folder", ["v1\n", "v01", "v\u0661", "v1 "])
def test_version_folders_are_whole_ascii_names(store, folder):
    base = store / "artifacts" / "digits_cnn"
    shutil.copytree(base / "v1", base / folder)
    assert [a.id for a in ArtifactStore(store).versions("digits_cnn")] == ["digits_cnn/v1"]
    ls = cli(["ls", "--check"], store)
    assert "not a version of the store" in ls.stderr and ls.stdout.count("digits_cnn/v1") == 1


@pytest.mark.parametrize("args", [["name='ab\n'"], ["name='\u0661x'"]])  # quoted: Hydra's lexer takes them
def test_names_are_whole_ascii_names(tmp_path, args):
    res = _no_traceback(run_cli([f"store.root={tmp_path / 'store'}", *args], tmp_path))
    assert res.returncode == 2 and "name:" in res.stderr and not (tmp_path / "store" / "artifacts").exists()


def test_export_refuses_bad_folders_and_section_names(store, tmp_path):
    cases = {
        "": "is empty",
        str(store): "inside the store",
        str(store / "runs" / "x"): "inside the store",
        "/proc/x/y": "cannot be made",
    }
    for dest, says in cases.items():
        res = _no_traceback(cli(["export", "digits_cnn/v1", dest], store))
        assert res.returncode == 2 and "DIR:" in res.stderr and says in res.stderr, (dest, res.stderr)
    res = _no_traceback(
        cli(["export", "digits_cnn/v1", str(tmp_path / "fw"), "--firmware", "--section", "abc\n"], store)
    )
    assert res.returncode == 2 and "--section" in res.stderr and not (tmp_path / "fw").exists()


def test_an_interrupted_assembly_leaves_no_staging_folder(store, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ArtifactStore, "publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_in_process([*QUICK, "name=third"], store)  # every stage cached: straight to assembly
    assert not list((store / "artifacts" / "third").iterdir())


def test_a_key_file_made_unsafe_after_its_first_use_is_refused(tmp_path, monkeypatch):
    """The warm service's long-lived process checks the key file again once it changed."""
    from ethosu_build.errors import ConfigError
    from ethosu_build.store import trust

    key = new_key_file(tmp_path)
    monkeypatch.setenv(KEY_ENV, str(key))
    first = trust.store_key(tmp_path / "store")
    assert trust.store_key(tmp_path / "store") == first
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        trust.store_key(tmp_path / "store")


def test_a_symlink_to_a_good_key_is_the_key_as_ssh_takes_it(store, tmp_path):
    link = tmp_path / "link.key"
    link.symlink_to(new_key_file(tmp_path, "real.key"))
    assert cli(["ls"], store, {KEY_ENV: str(link)}).returncode == 0  # (another key: its rows are marked)


def test_the_default_key_is_made_once_and_never_silently(store, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    clean = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    first = subprocess.run(
        [sys.executable, "-m", "ethosu_build.artifacts_cli", "--root", str(store), "ls"],
        env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    again = subprocess.run(
        [sys.executable, "-m", "ethosu_build.artifacts_cli", "--root", str(store), "ls"],
        env={**clean, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    key = tmp_path / "cfg" / "ethosu-build" / "store.key"
    assert first.returncode == again.returncode == 0 and oct(key.stat().st_mode & 0o777) == "0o600"
    assert f"created a new store key {key}" in first.stderr and "created" not in again.stderr
