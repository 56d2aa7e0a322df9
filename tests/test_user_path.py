"""What a new user meets on the way: output in a pipe, a CI log or a file, ids that keep their
meaning, listings in a sensible order, messages without internal figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from conftest import BIN, build_in_process, manifest, run_cli

from ethosu_build.pipeline.diff import _changed_by
from ethosu_build.store.artifacts import ArtifactStore
from ethosu_build.store.trust import signed_payload, store_key


def cli(args, root: Path, **kwargs):
    return run_cli(["--root", str(root), *args], root.parent, tool="ethosu-artifacts", **kwargs)


def test_a_reader_that_stops_reading_ends_the_command_as_a_pipe_would(store_copy):
    for args in (["ls", "--json"], ["show", "digits_cnn", "--json"], ["ls"], ["show", "digits_cnn"]):
        read, write = os.pipe()
        os.close(read)  # `| head -c 100` once it has read enough
        try:
            res = subprocess.run(
                [str(BIN / "ethosu-artifacts"), "--root", str(store_copy), *args],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
        assert res.returncode == 141 and res.stderr == "", (args, res.stderr)


def test_tables_outside_a_terminal_are_whole(store_copy):
    ls = cli(["ls", "--check"], store_copy, env={"COLUMNS": ""})  # a pipe, no COLUMNS: as wide as needed
    header = next(line for line in ls.stdout.splitlines() if line.strip().startswith("id"))
    assert header.split() == ["id", "target", "scheme", "ms", "SRAM", "flash", "top-1%", "check"]
    assert "digits_cnn/v1" in ls.stdout and "int8" in ls.stdout
    narrow = cli(["ls"], store_copy, env={"COLUMNS": "60"})  # COLUMNS, when set, is the width (the title wraps)
    first = narrow.stdout.splitlines()[0]
    assert len(first.rstrip()) <= 60 and "digits_cnn/v1" in narrow.stdout  # (only a too-long id may overflow it)
    show = cli(["show", "digits_cnn"], store_copy)  # the report as markdown: readable in a log
    report = (store_copy / "artifacts" / "digits_cnn" / "v1" / "report.md").read_text()
    assert show.returncode == 0 and show.stdout == report


def test_an_id_is_never_given_twice(store_copy):
    """gc --artifact of the newest version must not hand its id to the next, other build:
    MLflow runs and notes that name it keep meaning those bytes."""
    v1 = manifest(store_copy / "artifacts" / "other" / "v1")
    assert cli(["gc", "--artifact", "other/v1"], store_copy).returncode == 0
    again = build_in_process(["calibration.num_samples=17", "evaluation.num_samples=32", "name=other"], store_copy)
    assert again.artifact.id == "other/v2" and again.artifact.manifest()["build_key"] != v1["build_key"]


def test_versions_are_listed_by_number_and_newest_first(store_copy):
    base = store_copy / "artifacts" / "digits_cnn"
    for n in (2, 10):  # v2 and v10, written in the same second as v1
        shutil.copytree(base / "v1", base / f"v{n}")
        m = json.loads((base / f"v{n}" / "manifest.json").read_text())
        m["version"] = n  # (what a build of that number holds; then re-signed below)
        m.pop("signature")
        m["signature"] = store_key(store_copy).sign(signed_payload(m))
        (base / f"v{n}" / "manifest.json").write_text(json.dumps(m))
    rows = json.loads(cli(["ls", "digits_cnn", "--json"], store_copy).stdout)
    assert [r["id"] for r in rows] == ["digits_cnn/v10", "digits_cnn/v2", "digits_cnn/v1"]
    missing = cli(["show", "nope"], store_copy)
    assert "known: digits_cnn/v1, digits_cnn/v2, digits_cnn/v10, other/v1" in missing.stderr
    assert [a.version for a in ArtifactStore(store_copy).versions("digits_cnn")] == [1, 2, 10]


def test_a_change_without_a_relative_measure_is_said_in_words():
    assert "inf" not in _changed_by(float("inf")) and _changed_by(0.5) == "changed by 0.5 relative"


def test_retraining_the_digits_model_never_overwrites_the_shipped_weights(tmp_path):
    import sys

    from ethosu_build.models import DIGITS_CNN_WEIGHTS

    before = DIGITS_CNN_WEIGHTS.read_bytes()
    for args in ([], ["--out", str(DIGITS_CNN_WEIGHTS)]):
        res = subprocess.run(
            [sys.executable, "-m", "ethosu_build.models.train_digits_cnn", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 2 and "--out" in res.stderr, res.stderr
    assert DIGITS_CNN_WEIGHTS.read_bytes() == before


def test_every_subcommand_explains_its_arguments_with_examples_and_exit_codes():
    import argparse

    from ethosu_build.artifacts_cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    docs = (Path(__file__).parents[1] / "docs" / "artifacts.md").read_text()
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "examples:" in text and f"ethosu-artifacts {name}" in text and "exit codes:" in text, name
        assert all(a.help for a in p._actions), name  # every argument says what it takes
        assert f"ethosu-artifacts {name}" in docs, name  # and the docs' list names the command


def test_the_report_is_the_same_whether_the_memory_bill_came_from_the_cache_or_not(digits_store):
    """A bill read back from a cache entry has its keys sorted; one computed in place does not."""
    from ethosu_build.pipeline.report import render

    version = digits_store / "artifacts" / "digits_cnn" / "v1"
    m = manifest(version)
    shuffled = json.loads(json.dumps(m))
    shuffled["memory"]["parts"] = dict(reversed(list(m["memory"]["parts"].items())))
    shuffled["memory"]["regions"] = dict(reversed(list(m["memory"]["regions"].items())))
    assert render(shuffled, version / "vela") == render(m, version / "vela")
