"""Work a build hands to forked children (ethosu_build/background.py): the export and quantize
entries are stored from children, the float-vs-quantized comparison runs beside the lowering,
and a console-script build ends with os._exit after the interpreter's exit work. None of it
may change what a build computes, stores or says."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import assert_nothing_stored, assert_store_consistent, manifest, run_cli

from ethosu_build import background
from ethosu_build.store.cache import KeyLock, StageCache

QUICK = ["calibration.num_samples=32", "evaluation.num_samples=32", "evaluation.tosa_samples=4"]


def _build_log(root) -> str:
    return "\n".join(p.read_text() for p in sorted((root / "runs").rglob("build.log")))


def _entries(root) -> dict[str, dict[str, object]]:
    """Each stage's cache entry, as what its files hold: a program's graph code and tensors
    (the archive itself carries a random serialization id and object ids), other files'
    sha256."""
    import torch

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
            files[name + " values"] = [torch.equal(v, v) and v.flatten().tolist() for v in tensors.values()]
        out[json.loads((entry.path / "entry.json").read_text())["stage"]] = files
    return out


def test_children_store_and_compare_exactly_what_the_build_would_in_place(tmp_path):
    """The CLI as it runs (one thread: it forks) against the same CLI with a second thread,
    which makes it do all of that work in place."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    )
    runs = {
        "forked": {"ETHOSU_BUILD_WARM": "off"},
        "in_place": {"ETHOSU_BUILD_WARM": "off", "PYTHONPATH": str(site)},
    }
    for root, env in runs.items():
        res = run_cli([f"store.root={root}", *QUICK], tmp_path, env=env)
        assert res.returncode == 0, res.stderr[-2000:]
    children = ["storing the export stage's", "storing the quantize stage's", "comparing float and quantized"]
    assert all(f"{what}" in _build_log(tmp_path / "forked") for what in children)
    assert "in child process" not in _build_log(tmp_path / "in_place")

    forked = manifest(tmp_path / "forked" / "artifacts" / "digits_cnn" / "v1")
    in_place = manifest(tmp_path / "in_place" / "artifacts" / "digits_cnn" / "v1")
    for key in ("accuracy", "tosa_check"):
        assert forked["metrics"][key] == in_place["metrics"][key]
    assert forked["files"]["model.pte"]["sha256"] == in_place["files"]["model.pte"]["sha256"]
    assert _entries(tmp_path / "forked") == _entries(tmp_path / "in_place")
    assert_store_consistent(tmp_path / "forked")

    # what a child stored is what the next build reads: other evaluation samples take the
    # quantized programs from the cache
    other = [*QUICK, "evaluation.num_samples=16"]
    again = run_cli(["store.root=forked", *other], tmp_path, env=runs["forked"])
    assert again.returncode == 0, again.stderr[-2000:]
    stages = manifest(tmp_path / "forked" / "artifacts" / "digits_cnn" / "v2")["stages"]
    assert stages["quantize"]["status"] == "cached" and stages["evaluate"]["status"] == "ran", stages


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
        env={**os.environ, "ETHOSU_BUILD_WARM": "off"},
        timeout=600,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    assert "no space left on the device" in res.stderr and "Traceback" not in res.stderr
    assert "storing the quantize stage's cache entry: in child process" in _build_log(tmp_path / "store")
    assert_nothing_stored(tmp_path / "store")
    assert_store_consistent(tmp_path / "store")


def _held(path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_key_lock_handed_to_a_child_is_held_until_the_child_ends(tmp_path):
    path = tmp_path / "k.lock"
    lock = KeyLock(path, "waiting")
    go_r, go_w = os.pipe()
    child = background.Child("holding", lambda: os.read(go_r, 1) and "done", close_fds=KeyLock.held - {lock.fd})
    lock.hand_over()
    assert lock.fd == -1 and _held(path)  # this process let go, the child still holds it
    os.write(go_w, b"x")
    assert child.result() == "done"
    assert not _held(path)
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


@pytest.mark.parametrize("kind", ["symlink", "fifo", "folder"])
def test_a_lock_file_that_is_not_one_is_replaced_never_followed(kind, tmp_path):
    """A hostile store's key.lock: a link to a file outside the store (which must be neither
    truncated nor locked), a FIFO (which must not block), or a folder."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    path = tmp_path / "store" / "k.lock"
    path.parent.mkdir()
    if kind == "symlink":
        path.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        (path / "inside").mkdir(parents=True)
    with KeyLock(path, "waiting"):
        assert path.is_file() and not path.is_symlink() and _held(path)
    assert outside.read_text() == "precious" and not _held(outside)


def test_a_console_script_build_runs_every_exit_handler_before_it_ends(tmp_path):
    """os._exit ends the process only after atexit handlers ran (the first one registered,
    in sitecustomize, runs last) and the output was flushed."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "ran_at_exit"
    (site / "sitecustomize.py").write_text(
        f"import atexit, pathlib\natexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
    )
    env = {"ETHOSU_BUILD_WARM": "off", "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    res = run_cli(["store.root=store", *QUICK], tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert marker.read_text() == "yes"
    assert "built digits_cnn/v1" in res.stdout + res.stderr
    # and a failing one keeps its exit code and message (2: a config error)
    marker.unlink()
    bad = run_cli(["store.root=store", "calibration.num_samples=0"], tmp_path, env=env)
    assert bad.returncode == 2 and "calibration.num_samples" in bad.stderr and marker.read_text() == "yes"
