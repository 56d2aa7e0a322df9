"""Both CLIs treat bad input alike: exit 2, a message of a few lines naming the argument, no
traceback, nothing written; Ctrl-C is exit 130 with one line; the first screens say what
the tool is."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import pytest
from conftest import BIN, build_in_process, run_cli

from ethosu_build import artifacts_cli

QUICK = ["calibration.num_samples=8", "evaluation.num_samples=8", "evaluation.tosa_samples=1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with one good version (v1) and versions whose manifest is damaged or that
    are symlinks: v2 garbage, v3 `[]`, v4 `{}`, v5 a symlink to v1."""
    root = tmp_path_factory.mktemp("cli_errors") / "store"
    v1 = build_in_process(QUICK, root).artifact.path
    base = v1.parent
    for version, text in (("v2", "garbage"), ("v3", "[]"), ("v4", "{}")):
        shutil.copytree(v1, base / version)
        (base / version / "manifest.json").write_text(text)
    (base / "v5").symlink_to(v1)
    return root


def artifacts(args: list[str], capsys) -> tuple[int, str, str]:
    """ethosu-artifacts in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        artifacts_cli.main(args)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def assert_refused(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 4, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


@pytest.mark.parametrize("version,why", [("v2", "unreadable"), ("v3", "holds list"), ("v4", "lacks name")])
@pytest.mark.parametrize("command", ["show", "show --json", "diff", "export"])
def test_a_damaged_manifest_is_named_not_crashed_on(store, command, version, why, capsys, tmp_path):
    ref = f"digits_cnn/{version}"
    args = {
        "show": ["show", ref],
        "show --json": ["show", "--json", ref],
        "diff": ["diff", ref, "digits_cnn/v1"],
        "export": ["export", ref, str(tmp_path / "fw")],
    }[command]
    code, _, err = artifacts(["--root", str(store), *args], capsys)
    assert_refused(code, err, ref, why)
    assert not (tmp_path / "fw").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["show", "digits_cnn/v5"],
        ["diff", "digits_cnn/v5", "digits_cnn/v1"],
        ["gc", "--artifact", "digits_cnn/v5"],
        ["verify", "digits_cnn/v5"],
    ],
)
def test_a_symlinked_version_is_no_artifact(store, command, capsys):
    code, _, err = artifacts(["--root", str(store), *command], capsys)
    assert_refused(code, err, "digits_cnn/v5")
    assert (store / "artifacts" / "digits_cnn" / "v1" / "model.pte").is_file()


def test_ls_and_gc_report_damaged_manifests_and_go_on(store, capsys):
    code, out, err = artifacts(["--root", str(store), "ls", "--check", "--json"], capsys)
    assert code == 1 and "Traceback" not in err
    checks = {r["id"]: r["check"] for r in json.loads(out)}
    assert checks["digits_cnn/v1"] == "ok" and all(
        v in checks for v in ("digits_cnn/v2", "digits_cnn/v3", "digits_cnn/v4")
    )
    code, out, err = artifacts(["--root", str(store), "gc", "--dry-run"], capsys)
    assert code == 0 and "digits_cnn/v5" in out  # the symlink is debris; damaged versions stay until named


def test_summarize_needs_a_sweep_dir(store, capsys, tmp_path):
    for folder in (store, tmp_path / "nowhere"):
        code, _, err = artifacts(["summarize", str(folder)], capsys)
        assert_refused(code, err, "SWEEP_DIR", "not a sweep dir")


def test_export_refuses_its_own_folder_and_a_file(store, capsys, tmp_path):
    v1 = store / "artifacts" / "digits_cnn" / "v1"
    code, _, err = artifacts(["--root", str(store), "export", "digits_cnn/v1", str(v1)], capsys)
    assert_refused(code, err, "DIR", "inside the store")
    (tmp_path / "afile").write_text("x")
    code, _, err = artifacts(["--root", str(store), "export", "digits_cnn/v1", str(tmp_path / "afile")], capsys)
    assert_refused(code, err, "DIR", "not a folder")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["lock", "no_such_recipe"], ["recipe", "no_such_recipe", "accepted: digits_gated_u85"]),
        (["verify", "--recipe", "no_such_recipe"], ["recipe", "no_such_recipe"]),
        (["verify"], ["ID", "missing"]),
        (["show", "nope/v9"], ["ID", "no artifact 'nope/v9'"]),
        (["gc", "--artifact", "nope"], ["--artifact", "no artifact 'nope'"]),
        (["lock", "digits_u55", "--searchpath", "no_such_dir"], ["--searchpath", "no_such_dir", "not a folder"]),
        (["lock", "digits_u55"], ["RECIPE", "built-in recipe", "conf/recipe/digits_u55.yaml"]),  # not into the package
    ],
)
def test_each_subcommand_names_its_bad_argument(args, fragments, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = artifacts(args, capsys)
    assert_refused(code, err, *fragments)


def test_a_root_that_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = artifacts(["--root", str(tmp_path / "f"), "ls"], capsys)
    assert_refused(code, err, "--root", "is a file")


def test_a_recipe_that_is_not_yaml_and_a_lock_that_is_not_a_lock(user_repo, capsys, monkeypatch):
    monkeypatch.chdir(user_repo)
    (user_repo / "conf" / "recipe" / "broken.yaml").write_text("# @package _global_\nname: [unclosed\n")
    code, _, err = artifacts(["lock", "broken", "--searchpath", "conf"], capsys)
    assert_refused(code, err, "broken.yaml", "is not valid YAML", "line 3")
    res = run_cli(["hydra.searchpath=[file://conf]", "recipe=broken", "store.root=store"], user_repo)
    assert res.returncode == 2 and "is not valid YAML" in res.stderr and "Traceback" not in res.stderr
    (user_repo / "conf" / "recipe" / "tiny_u85.lock.json").write_text("{garbage")
    res = run_cli(
        ["hydra.searchpath=[file://conf]", "recipe=tiny_u85", "store.root=store", "allow_dirty=true"], user_repo
    )
    assert res.returncode == 2 and "tiny_u85.lock.json" in res.stderr and "is unreadable" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_ctrl_c_stops_a_build_with_one_line_and_exit_130(tmp_path):
    proc = subprocess.Popen(
        [str(BIN / "ethosu-build"), "store.root=store", *QUICK],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "quantize: running" in line:
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, rest[-2000:]
    assert "Traceback" not in rest and "interrupted" in rest and len(rest.strip().splitlines()) <= 3, rest
    assert not (tmp_path / "store" / "artifacts").exists() or not any(
        (tmp_path / "store" / "artifacts").rglob("manifest.json")
    )


def test_help_says_what_the_tool_is(tmp_path):
    res = run_cli(["--help"], tmp_path)
    assert res.returncode == 0
    first = res.stdout.splitlines()[0]
    assert first.startswith("ethosu-build:") and "powered by Hydra" not in res.stdout
    assert "docs/" in res.stdout and "recipe:" in res.stdout and "Exit codes" in res.stdout


def test_ls_fits_80_columns_and_never_cuts_an_id(store, tmp_path):
    res = run_cli(["--root", str(store), "ls"], tmp_path, tool="ethosu-artifacts", env={"COLUMNS": "80"})
    lines = res.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), res.stdout
    assert "digits_cnn/v1" in res.stdout and "…" not in res.stdout
    header = next(line for line in lines if " id " in f" {line} ")
    for column in ("target", "scheme", "ms", "SRAM", "flash", "top-1%"):
        assert column in header, header


def test_an_exception_without_a_message_is_named_by_its_type():
    """An exception with no message (str(exc) == '') gives its type's name, never an IndexError."""
    from ethosu_build.errors import first_line, outcome

    assert first_line(RuntimeError()) == "RuntimeError"
    assert outcome(RuntimeError()).message == "RuntimeError: RuntimeError"


def test_a_ctrl_c_while_a_config_error_is_handled_is_still_an_interrupt():
    """The CLI translates Hydra's refusals before the one map (app._main); a KeyboardInterrupt
    or a closed pipe raised while a config error was being handled (a sweep's summary, a
    failed job's record) keeps its own exit, not the config error's."""
    from ethosu_build.config.hydra_errors import from_hydra
    from ethosu_build.errors import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, ConfigError, ConfigIssue, outcome

    for raised, code in ((KeyboardInterrupt(), EXIT_INTERRUPTED), (BrokenPipeError(), EXIT_BROKEN_PIPE)):
        try:
            try:
                raise ConfigError(ConfigIssue("target", "'nope' is not a target"))
            except ConfigError:
                raise raised  # noqa: B904 (an interrupt mid-handling: the context is the point)
        except BaseException as exc:  # noqa: BLE001
            assert exc.__context__ is not None  # the config error it interrupted
            assert outcome(from_hydra(exc) or exc).exit_code == code


def test_listing_and_checking_import_neither_torch_nor_executorch(store, tmp_path):
    probe = (
        "import sys\n"
        "from ethosu_build import artifacts_cli\n"
        "for args in (['ls'], ['ls', '--check'], ['show', 'digits_cnn/v1'], ['gc', '--dry-run']):\n"
        "    try:\n"
        f"        artifacts_cli.main(['--root', {str(store)!r}, *args])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('IMPORTED', 'torch' in sys.modules, 'executorch' in sys.modules)\n"
    )
    res = subprocess.run([str(BIN / "python"), "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert "IMPORTED False False" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]
