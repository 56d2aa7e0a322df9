"""An adversarial pass over the store's trust rule (docs/trust.md), as a co-worker who can
write the store but holds no key: each case got round the rule, hung a command or crashed it
on the main of the day. The bytes a command acts on are the bytes it checked."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, build_in_process, run_cli

from ethosu_build import artifacts_cli
from ethosu_build.fingerprint import sha256_bytes
from ethosu_build.store import artifacts as store_artifacts
from ethosu_build.store.cache import StageCache
from ethosu_build.store.trust import KEY_ENV

QUICK = ["calibration.num_samples=16", "evaluation.num_samples=32", "evaluation.tosa_samples=4"]


def cli(args, root: Path, env: dict | None = None, cwd: Path | None = None):
    return run_cli(["--root", str(root), *args], cwd or root.parent, tool="ethosu-artifacts", env=env)


def clean(res):
    assert "Traceback" not in res.stderr and "a bug in ethosu-build" not in res.stderr, res.stderr[-2000:]
    return res


def swap_after_check(monkeypatch, name: str, data: bytes) -> None:
    """Replace a version's file right after the trust check, as a racing co-worker would."""
    real = artifacts_cli.common.check  # the check every command asks first (common._checked)

    def racing(a, *args, **kwargs):
        result = real(a, *args, **kwargs)
        (a.path / name).write_bytes(data)
        return result

    monkeypatch.setattr(artifacts_cli.common, "check", racing)
    monkeypatch.setattr("ethosu_build.pipeline.verify.check", racing)


def test_verify_builds_the_checked_config_never_a_file_swapped_after_the_check(store_copy, monkeypatch):
    from ethosu_build.pipeline import verify

    v1 = store_copy / "artifacts" / "digits_cnn" / "v1"
    swap_after_check(monkeypatch, "config.yaml", b"model: {factory: {_target_: torch.load, f: /tmp/planted}}\n")
    built = {}
    monkeypatch.setattr(verify, "_compare", lambda subject, stored, checked, config, *rest: built.update(config))
    verify.rebuild(store_artifacts.ArtifactStore(store_copy).resolve("digits_cnn/v1"))
    assert built == json.loads((v1 / "manifest.json").read_text())["config"]  # the signed manifest's config


@pytest.mark.parametrize("command", [["show", "digits_cnn/v1"], ["export", "digits_cnn/v1"]])
def test_show_and_export_never_print_or_copy_a_file_swapped_after_the_check(
    store_copy, tmp_path, monkeypatch, capsys, command
):
    swap_after_check(monkeypatch, "report.md", b"# all good, ship it\n")
    args = ["--root", str(store_copy), *command] + ([str(tmp_path / "out")] if command[0] == "export" else [])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as done:
        artifacts_cli.main(args)
    out, err = capsys.readouterr()
    assert done.value.code == 2 and "changed while it was read: report.md: sha256 differs" in err
    assert "ship it" not in out
    assert not (tmp_path / "out").exists()


def test_diff_reads_only_listed_files_through_real_folders(store_copy, tmp_path):
    exported = tmp_path / "exp"
    assert cli(["export", "digits_cnn/v1", str(exported)], store_copy).returncode == 0
    m = json.loads((exported / "manifest.json").read_text())
    del m["files"]["model.pte"], m["signature"]
    (exported / "manifest.json").write_text(json.dumps(m))
    (exported / "model.pte").unlink()
    os.mkfifo(exported / "model.pte")  # reading it would hang the command
    res = clean(cli(["diff", "digits_cnn/v1", str(exported)], store_copy))
    assert res.returncode == 2 and "lists no model.pte" in res.stderr
    linked = tmp_path / "linked"
    assert cli(["export", "digits_cnn/v1", str(linked)], store_copy).returncode == 0
    (tmp_path / "elsewhere").mkdir()
    (linked / "vela").rename(tmp_path / "elsewhere" / "vela")
    (linked / "vela").symlink_to(tmp_path / "elsewhere" / "vela")
    res = clean(cli(["diff", "digits_cnn/v1", str(linked)], store_copy))
    assert res.returncode == 2 and "vela is not a folder of the version" in res.stderr


def test_a_symlinked_cache_bucket_is_unlinked_never_emptied(store_copy, tmp_path):
    other = tmp_path / "other_cache"
    cache = StageCache(store_copy)
    key = json.loads((store_copy / "artifacts" / "digits_cnn" / "v1" / "manifest.json").read_text())["stage_keys"][
        "vela"
    ]
    bucket = cache.path(key).parent
    bucket.rename(other)
    bucket.symlink_to(other)
    # an entry read through the link does not verify as in place: the link goes, never its target
    for a in store_artifacts.ArtifactStore(store_copy).all():
        import shutil

        shutil.rmtree(a.path)
    built = build_in_process(QUICK, store_copy)
    assert built.artifact.id == "digits_cnn/v2" and (other / key / "entry.json").is_file()
    assert not bucket.is_symlink() and bucket.is_dir()


@pytest.mark.parametrize("content", ["[" * 100000 + "]" * 100000, "[]", '"x"'])
def test_malformed_manifests_and_entries_are_damage_not_crashes(store_copy, content):
    v1 = store_copy / "artifacts" / "digits_cnn" / "v1"
    (v1 / "manifest.json").write_text(content)
    for args in (["ls"], ["ls", "--check"], ["show", "digits_cnn/v1"], ["gc", "--dry-run"]):
        res = clean(cli(args, store_copy))
        assert res.returncode in (0, 1, 2), (args, res.stderr)
    entry = next(StageCache(store_copy).path(k) for k in StageCache(store_copy).keys())
    (entry / "entry.json").write_text(content)
    assert StageCache(store_copy).get(entry.name) is None  # discarded


def test_a_huge_manifest_is_never_read_whole(store_copy):
    manifest = store_copy / "artifacts" / "digits_cnn" / "v1" / "manifest.json"
    with open(manifest, "r+b") as f:
        f.truncate(20 << 30)  # sparse: no disk used
    res = clean(cli(["ls", "--check"], store_copy))
    assert res.returncode == 1 and "manifest.json is 21474836480 bytes, more than it may hold" in res.stderr


def test_terminal_escapes_in_a_forged_report_are_shown_inert(store_copy):
    v1 = store_copy / "artifacts" / "digits_cnn" / "v1"
    (v1 / "report.md").write_text("\x1b]0;owned\x07\x1b[2J# all good\n")
    m = json.loads((v1 / "manifest.json").read_text())
    m["files"]["report.md"]["sha256"] = sha256_bytes((v1 / "report.md").read_bytes())
    del m["signature"]
    (v1 / "manifest.json").write_text(json.dumps(m))
    res = clean(cli(["show", "digits_cnn/v1"], store_copy))
    assert res.returncode == 1 and "\x1b" not in res.stdout and "all good" in res.stdout


def test_planted_name_locks_and_version_records_never_stop_or_steer_a_build(store_copy):
    base = store_copy / "artifacts" / "digits_cnn"
    (base / ".lock").unlink(missing_ok=True)
    (base / ".lock").mkdir()
    (base / ".last-version").unlink(missing_ok=True)
    (base / ".last-version").write_text("999999999 0000\n")  # a jump no key signed
    assert build_in_process([*QUICK, "calibration.num_samples=17"], store_copy).artifact.id == "digits_cnn/v2"
    (base / ".last-version").unlink()
    (base / ".last-version").mkdir()
    assert build_in_process([*QUICK, "calibration.num_samples=18"], store_copy).artifact.id == "digits_cnn/v3"


def test_export_never_writes_through_a_symlinked_folder_of_dir(store_copy, tmp_path):
    dest, victim = tmp_path / "dest", tmp_path / "victim"
    dest.mkdir()
    victim.mkdir()
    (dest / "vela").symlink_to(victim)
    res = clean(cli(["export", "digits_cnn/v1", str(dest), "--force"], store_copy))
    assert res.returncode == 2 and "vela is a symlink" in res.stderr and not any(victim.iterdir())


def test_bad_arguments_of_the_store_commands_exit_2(store_copy, tmp_path):
    assert clean(cli(["ls"], store_copy, env={KEY_ENV: ""})).returncode == 2  # set but empty: never the default key
    res = clean(run_cli(["--root", "", "gc"], tmp_path, tool="ethosu-artifacts"))
    assert res.returncode == 2 and "--root: is empty" in res.stderr
    res = clean(cli(["ls", "digits_cnn/v1"], store_copy))
    assert res.returncode == 2 and "show NAME/vN" in res.stderr
    res = clean(cli(["ls", "--check"], tmp_path / "nowhere"))
    assert res.returncode == 2
    key_error = clean(cli(["ls"], store_copy, env={KEY_ENV: str(tmp_path / "missing.key")}))
    assert "bad argument (1), nothing was done" in key_error.stderr and key_error.stderr.count("accepted") <= 1


def test_listing_a_store_runs_no_module_planted_in_the_folder_it_runs_in(store_copy, tmp_path):
    marker = tmp_path / "RAN"
    (store_copy / "rich.py").write_text(f"open({str(marker)!r}, 'w')\n")
    assert cli(["ls"], store_copy, cwd=store_copy).returncode == 0 and not marker.exists()


def test_a_closed_stdout_is_no_crash(store_copy):
    res = subprocess.run(
        f"{BIN / 'ethosu-artifacts'} --root {store_copy} ls >&-", shell=True, capture_output=True, text=True
    )
    clean(res)


def test_ls_check_names_every_stray_folder_and_what_gc_does_with_it(store_copy):
    arts = store_copy / "artifacts"
    (arts / "bad name" / "v1").mkdir(parents=True)
    (arts / "\uff24IG" / "v1").mkdir(parents=True)
    os.mkfifo(arts / "digits_cnn" / "fifo")
    (arts / "digits_cnn" / "v1\n").mkdir()
    res = clean(cli(["ls", "--check"], store_copy))
    assert "bad name: a folder whose name no artifact can have" in res.stderr and "\uff24IG" in res.stderr
    assert "stray (gc leaves it)" in res.stderr and "digits_cnn/v1\\n" in res.stderr  # shown, not a raw newline
    assert clean(cli(["gc"], store_copy)).returncode == 0
    assert (arts / "digits_cnn" / "fifo").exists()  # as ls said


# --- the second adversarial pass ---------------------------------------------------------------


def forge(version: Path, edit) -> None:
    """Edit a manifest, recompute every listed file's sha256 and size, drop the signature: an
    unsigned but intact version, as anyone who can write the store can make one."""
    m = json.loads((version / "manifest.json").read_text())
    edit(m)
    for name in m["files"]:
        data = (version / name).read_bytes()
        m["files"][name] = {"sha256": sha256_bytes(data), "size": len(data)}
    m.pop("signature", None)
    (version / "manifest.json").write_text(json.dumps(m))


def test_a_huge_sparse_file_is_refused_unread_and_never_stops_a_build(store_copy):
    v1 = store_copy / "artifacts" / "digits_cnn" / "v1"
    (v1 / "model.pte").unlink()
    with open(v1 / "model.pte", "wb") as f:
        f.truncate(40 << 30)  # sparse: no disk used; read whole, it would take the machine's memory
    res = clean(cli(["ls", "--check"], store_copy))
    assert res.returncode == 1 and "model.pte: size differs from the manifest" in res.stderr
    for entry in StageCache(store_copy).keys():
        path = StageCache(store_copy).path(entry) / "entry.json"
        path.unlink()
        with open(path, "wb") as f:
            f.truncate(40 << 30)
    assert build_in_process(QUICK, store_copy).artifact.id == "digits_cnn/v2"  # rebuilt, never a MemoryError


def test_gc_never_removes_another_version_reached_through_a_planted_link(store_copy):
    v1 = store_copy / "artifacts" / "digits_cnn" / "v1"
    other = store_copy / "artifacts" / "other" / "v1"
    import shutil

    shutil.rmtree(v1 / "vela")
    (v1 / "vela").symlink_to(other / "vela")
    res = clean(cli(["gc", "--artifact", str(v1 / "vela" / "..")], store_copy))
    assert res.returncode == 2 and "goes through a symlink" in res.stderr and other.is_dir()


def test_what_a_side_not_signed_here_says_never_drives_the_terminal(store_copy, tmp_path):
    forged = tmp_path / "forged"
    assert cli(["export", "digits_cnn/v1", str(forged)], store_copy).returncode == 0
    forge(forged, lambda m: m["config"]["model"].update(name="\x1b]0;PWNED\x07\x1b[2J evil"))
    res = clean(cli(["diff", "digits_cnn/v1", str(forged)], store_copy))
    assert "\x1b" not in res.stdout and "evil" in res.stdout
    os.symlink("/etc/passwd", store_copy / "artifacts" / "evil\x1b[2Jname")
    res = clean(cli(["gc"], store_copy))
    assert res.returncode == 0 and "\x1b" not in res.stdout and "evil" in res.stdout


def test_an_intact_side_with_odd_field_types_is_refused_not_a_crash(store_copy, tmp_path):
    odd = tmp_path / "odd"
    assert cli(["export", "other/v1", str(odd)], store_copy).returncode == 0
    forge(odd, lambda m: m.update(delegation="str", metrics="x"))
    (odd / "model.pte").write_bytes((odd / "model.pte").read_bytes() + b"\0")  # other bytes: compared in depth
    forge(odd, lambda m: None)
    res = clean(cli(["diff", "digits_cnn/v1", str(odd)], store_copy))
    assert res.returncode == 2 and "cannot be read as a build" in res.stderr


def test_verify_against_a_recipe_needs_a_listed_program(store_copy):
    v1 = store_copy / "artifacts" / "digits_cnn" / "v1"
    (v1 / "model.pte").unlink()
    forge(v1, lambda m: m["files"].pop("model.pte"))
    res = clean(cli(["verify", "digits_cnn/v1", "--recipe", "digits_u55"], store_copy))
    assert res.returncode == 2 and "lists no model.pte" in res.stderr


def test_a_store_that_cannot_be_written_is_a_clean_error():
    import argparse
    import errno

    exc = artifacts_cli._os_error(OSError(errno.EROFS, "Read-only file system", "/ro/cache"), argparse.Namespace(
        command="gc", root="/ro"))  # fmt: skip
    assert exc.exit_code == 2 and "--root" in str(exc) and "cannot be read or written" in str(exc)
    full = artifacts_cli._os_error(OSError(errno.ENOSPC, "No space left on device", "/x"), argparse.Namespace(
        command="export", root="/ro"))  # fmt: skip
    assert full.exit_code == 1


def test_a_refused_export_leaves_dir_as_it_was(store_copy, tmp_path):
    dest = tmp_path / "dest"
    assert cli(["export", "other/v1", str(dest)], store_copy).returncode == 0
    before = (dest / "manifest.json").read_bytes()
    (dest / "model.pte").unlink()
    (dest / "model.pte" / "sub").mkdir(parents=True)
    res = clean(cli(["export", "digits_cnn/v1", str(dest), "--force"], store_copy))
    assert res.returncode == 2 and "is a folder" in res.stderr and (dest / "manifest.json").read_bytes() == before


def test_a_tosa_check_file_that_inflates_beyond_reason_is_not_compared(digits_store, monkeypatch):
    from ethosu_build.pipeline import diff as diff_mod

    a = store_artifacts.ArtifactStore(digits_store).resolve("digits_cnn/v1")
    b = store_artifacts.ArtifactStore(digits_store).resolve("other/v1")
    monkeypatch.setattr(diff_mod, "MAX_TOSA_IO", 10)  # as a zip bomb's would, beyond the cap
    out = diff_mod._outputs(a, b, a.manifest(), b.manifest())
    assert not out["compared"] and "inflates beyond" in out["reason"]


def test_a_narrow_terminal_never_cuts_an_id_or_its_marker(store_copy):
    forge(store_copy / "artifacts" / "other" / "v1", lambda m: None)
    res = clean(cli(["ls"], store_copy, env={"COLUMNS": "20"}))
    assert "other/v1 (untrusted)" in res.stdout and "digits_cnn/v1" in res.stdout
