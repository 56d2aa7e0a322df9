"""Work a build hands to forked children (ethosu_build/background.py): the export and quantize
entries are stored from children, the float-vs-quantized comparison runs beside the lowering,
and a console-script build ends with os._exit after the interpreter's exit work. None of it
may change what a build computes, stores or says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import assert_nothing_stored, assert_store_consistent, flock_held, manifest, run_cli

from ethosu_build import background
from ethosu_build.errors import EXIT_CONFIG_ERROR, ConfigError
from ethosu_build.store.cache import KeyLock, StageCache
from ethosu_build.switches import ACCEPTED

QUICK = ["calibration.num_samples=32", "evaluation.num_samples=32", "evaluation.tosa_samples=4"]
# In sitecustomize: a second thread, so the build forks nothing (background.possible()).
THREAD = "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"


def _build_log(root) -> str:
    return "\n".join(p.read_text() for p in sorted((root / "runs").rglob("build.log")))


def _entries(root) -> dict[str, dict[str, object]]:
    """Each stage's cache entry, as what its files hold: a program's graph code and tensors
    (the archive itself carries a random serialization id and object ids), other files'
    sha256."""
    from ethosu_build.pipeline.export import load_program

    cache = StageCache(root)
    out = {}
    for key in cache.keys():
        entry = cache.get(key)
        assert entry is not None, key
        files: dict[str, object] = {}
        for name, sha in entry.files.items():
            if not name.endswith(".pt2"):
                files[name] = sha
                continue
            program = load_program(entry.read(name))
            tensors = {**program.state_dict, **program.constants}
            files[name] = (program.graph_module.code, {k: (v.dtype, v.shape) for k, v in tensors.items()})
            files[name + " values"] = [v.flatten().tolist() for v in tensors.values()]
        out[json.loads((entry.path / "entry.json").read_text())["stage"]] = files
    return out


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_children_store_and_check_exactly_what_the_build_would_in_place(tmp_path):
    """The CLI forking whatever the machine's load (ETHOSU_BUILD_BACKGROUND=on) against the
    same CLI with a second thread, which makes it do all of that work in place. Both end with
    os._exit only after every atexit handler ran (sitecustomize registers the first, so it
    runs last)."""
    sites = {}
    for root, thread in (("forked", ""), ("in_place", THREAD)):
        sites[root] = tmp_path / f"site_{root}"
        sites[root].mkdir()
        marker = tmp_path / f"{root}_exited"
        (sites[root] / "sitecustomize.py").write_text(
            f"import atexit, pathlib\natexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n{thread}"
        )
        env = {"ETHOSU_BUILD_WARM": "off", "ETHOSU_BUILD_BACKGROUND": "on", "PYTHONPATH": str(sites[root])}
        res = run_cli([f"store.root={root}", *QUICK], tmp_path, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"built digits_cnn/v1 -> {root}/" in res.stdout + res.stderr and marker.read_text() == "yes"
    children = [
        "storing the export stage's",
        "storing the quantize stage's",
        "running the float model",
        "running the quantized model",
        "on the TOSA reference model",
    ]
    assert all(f"{what}" in _build_log(tmp_path / "forked") for what in children)
    assert "in child process" not in _build_log(tmp_path / "in_place")

    forked = manifest(tmp_path / "forked" / "artifacts" / "digits_cnn" / "v1")
    in_place = manifest(tmp_path / "in_place" / "artifacts" / "digits_cnn" / "v1")
    for key in ("accuracy", "tosa_check"):
        assert forked["metrics"][key] == in_place["metrics"][key]
    assert forked["metrics"]["tosa_check"]["status"] == "done"
    for name in ("model.pte", "check/tosa_io.npz"):
        assert forked["files"][name]["sha256"] == in_place["files"][name]["sha256"], name
    assert _entries(tmp_path / "forked") == _entries(tmp_path / "in_place")
    assert_store_consistent(tmp_path / "forked")

    # ethosu-artifacts ends the same way, its exit code kept
    (tmp_path / "forked_exited").unlink()
    env = {"PYTHONPATH": str(sites["forked"])}
    ls = run_cli(["--root", "forked", "ls", "--check"], tmp_path, tool="ethosu-artifacts", env=env)
    assert ls.returncode == 0 and "digits_cnn/v1" in ls.stdout and (tmp_path / "forked_exited").read_text() == "yes"
    bad = run_cli(["--root", "forked", "show", "nosuch/v1"], tmp_path, tool="ethosu-artifacts", env=env)
    assert bad.returncode == 2 and "nosuch" in bad.stderr


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_a_store_that_fails_in_its_child_fails_the_build_and_publishes_nothing(tmp_path):
    """A full disk met by the child storing the quantize entry: the build fails as it would
    have in place (exit 1, the same message), and nothing is published."""
    script = textwrap.dedent(
        """
        import contextlib, errno, sys
        from ethosu_build import numerics
        numerics.pin()
        from ethosu_build.store.cache import StageCache
        put = StageCache.put

        @contextlib.contextmanager
        def full(self, key, stage):
            if stage != "quantize":
                with put(self, key, stage) as folder:
                    yield folder
                return
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path(key)))
            yield

        StageCache.put = full
        sys.argv = ["ethosu-build", *sys.argv[1:]]
        from ethosu_build import cli
        cli.build_main()
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script, "store.root=store", *QUICK],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "ETHOSU_BUILD_WARM": "off", "ETHOSU_BUILD_BACKGROUND": "on"},
        timeout=600,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert "no space left on the device" in res.stderr and "Traceback" not in res.stderr
    assert "storing the quantize stage's cache entry: in child process" in _build_log(tmp_path / "store")
    assert_nothing_stored(tmp_path / "store")
    assert_store_consistent(tmp_path / "store")


def test_a_key_lock_handed_to_a_child_is_held_until_the_child_ends(tmp_path):
    path = tmp_path / "k.lock"
    lock = KeyLock(path, "waiting")
    go_r, go_w = os.pipe()
    child = background.Child("holding", lambda: os.read(go_r, 1) and "done", close_fds=KeyLock.held - {lock.fd})
    lock.hand_over()
    assert lock.fd == -1 and flock_held(path)  # this process let go, the child still holds it
    os.write(go_w, b"x")
    assert child.result() == "done"
    assert not flock_held(path)
    os.close(go_r)
    os.close(go_w)


def test_a_childs_error_comes_back_as_the_error_it_was(tmp_path):
    missing = tmp_path / "missing" / "file"
    child = background.Child("reading", lambda: missing.read_bytes())
    with pytest.raises(background.ChildFailed) as failed:
        child.result()
    with pytest.raises(FileNotFoundError) as again:
        failed.value.reraise()
    assert again.value.filename == str(missing) and "reading" in str(failed.value)


def test_a_bad_background_setting_is_a_config_error(tmp_path):
    res = run_cli(["store.root=store", *QUICK], tmp_path, env={"ETHOSU_BUILD_BACKGROUND": "sometimes"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"ETHOSU_BUILD_BACKGROUND: 'sometimes' is not accepted; accepted: {ACCEPTED}" in res.stderr
    assert not (tmp_path / "store").exists()  # refused before Hydra makes its run dir in the store


def test_forking_is_chosen_only_where_it_is_safe(monkeypatch):
    import threading

    monkeypatch.setattr(threading, "active_count", lambda: 1)
    # every spelling of switches.py, as ETHOSU_BUILD_WARM takes them (test_warm.py)
    forks = {"on": True, "1": True, "ON": True, "true": True, "Yes": True}
    for value, expected in {**forks, "off": False, "0": False, " Off ": False, "false": False, "NO": False}.items():
        monkeypatch.setenv("ETHOSU_BUILD_BACKGROUND", value)
        assert background.possible() is expected, value
    for value in ("sometimes", "2", "enabled"):
        monkeypatch.setenv("ETHOSU_BUILD_BACKGROUND", value)
        with pytest.raises(ConfigError) as refused:
            background.possible()
        assert refused.value.exit_code == EXIT_CONFIG_ERROR
        assert (
            str(refused.value.issues[0]) == f"ETHOSU_BUILD_BACKGROUND: {value!r} is not accepted; accepted: {ACCEPTED}"
        )
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # another thread: never, even when asked
    monkeypatch.setenv("ETHOSU_BUILD_BACKGROUND", "on")
    assert background.possible() is False


def test_an_idle_core_is_one_no_other_task_wants_for_a_while(monkeypatch):
    """A task runnable for a moment (a kernel thread writing back what a child stored) does
    not take the idle core away; tasks runnable at every reading do."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3})
    # this process is runnable in every reading: 1 is nobody else
    cases = (([2, 1, 1, 1, 1], 4), ([2, 2, 2, 2, 2], 3), ([1, 1, 1, 1, 1], 4), ([5, 4, 6, 4, 9], 1), ([9] * 5, 1))
    for readings, spare in cases:
        it = iter(readings)
        monkeypatch.setattr(background, "_runnable", lambda it=it: next(it))
        assert background._spare_cores() == spare, readings
