"""Warm builds (docs/warm.md): a build through the service is one without it, byte for byte and
message for message; the service is the user's alone; a dead service costs one line."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import BIN, FIXTURES, assert_nothing_stored, assert_store_consistent, run_cli

from ethosu_build import warm

REPO = ["hydra.searchpath=[file://conf]", "store.root=store"]
OUTCOMES = {  # name: (overrides, exit code)
    "good build": (["model=tiny_net", "target=ethos-u55-128"], 0),
    "config error": (["model=tiny_net", "calibration.num_samples=0"], 2),
    "Vela rejection": (["model=upsampler", "target=ethos-u55-128", "quantization=a16w8"], 1),
    "budget breach": (["model=tiny_net", "target=ethos-u55-128", "budget.max_sram_kib=0.01"], 3),
}
FALLBACK = "building in this process"


def _messages(res: subprocess.CompletedProcess, cwd: Path) -> list[str]:
    """What the user reads, without what differs between any two runs: timestamps, durations,
    the folder, the run dir's time and process id."""
    text = (res.stdout + res.stderr).replace(str(cwd), "<cwd>")
    text = re.sub(r"^\[[\d-]+ [\d:,]+\]", "", text, flags=re.M)
    text = re.sub(r"\d+(\.\d+)? s\b", "<t> s", text)
    text = re.sub(r"runs/[\w/.-]+", "runs/<run>", text)
    return text.splitlines()


def _status(env: dict, cwd: Path) -> dict[str, str]:
    res = run_cli(["--warm", "status"], cwd, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(line.split(": ", 1) for line in res.stdout.splitlines())


def _service_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def _connect_as(uid: int, where: Path) -> str:
    """Connects to the socket from a child process that has become user `uid`; returns the
    exception's name ("" if it connected)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        outcome = ""
        try:
            os.setgid(uid)
            os.setuid(uid)
            socket.socket(socket.AF_UNIX).connect(str(where))
        except BaseException as exc:  # noqa: BLE001
            outcome = type(exc).__name__
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        return f.read()


@pytest.fixture
def runtime_env():
    """A runtime directory of the test's own, short enough for a socket path."""
    folder = tempfile.mkdtemp(prefix="w")
    env = {"XDG_RUNTIME_DIR": folder, "ETHOSU_BUILD_WARM": "auto"}
    yield env
    subprocess.run([str(BIN / "ethosu-build"), "--warm", "stop"], env={**os.environ, **env}, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_warm_builds_are_cold_builds(tmp_path, runtime_env):
    cold, hot = tmp_path / "cold", tmp_path / "warm"
    for repo in (cold, hot):
        shutil.copytree(FIXTURES / "user_repo", repo)
    off = {**runtime_env, "ETHOSU_BUILD_WARM": "off"}
    started = run_cli(["--warm", "start", "--idle", "600"], tmp_path, env=runtime_env)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "ready" in started.stdout

    # The socket is the user's alone: a 0700 directory of theirs, a 0600 socket.
    where = Path(_status(runtime_env, tmp_path)["socket"])
    folder = os.lstat(where.parent)
    assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.getuid()
    assert stat.S_IMODE(os.lstat(where).st_mode) == 0o600
    if os.getuid() == 0:  # another user's process cannot connect (as root, become nobody to try)
        assert _connect_as(65534, where) == "PermissionError"

    # The same exit code, messages and bytes, with the service and without it.
    for name, (overrides, code) in OUTCOMES.items():
        builds = int(_status(runtime_env, tmp_path)["builds"])
        a = run_cli([*REPO, *overrides], cold, env=off)
        b = run_cli([*REPO, *overrides], hot, env=runtime_env)
        assert (a.returncode, b.returncode) == (code, code), (name, a.stderr[-2000:], b.stderr[-2000:])
        assert _messages(a, cold) == _messages(b, hot), name
        assert FALLBACK not in b.stderr
        assert int(_status(runtime_env, tmp_path)["builds"]) == builds + 1, name  # it did go through the service
    pte = "store/artifacts/tiny_net/v1/model.pte"
    assert (cold / pte).read_bytes() == (hot / pte).read_bytes()
    assert_nothing_stored(cold / "store" / "artifacts" / "upsampler")
    assert sorted(p.name for p in (hot / "store" / "artifacts" / "tiny_net").iterdir() if p.is_dir()) == ["v1"]

    # `ethosu-artifacts verify` rebuilds: through the service too, with the same report.
    builds = int(_status(runtime_env, tmp_path)["builds"])
    verify = ["--root", "store", "verify", "tiny_net/v1"]
    a = run_cli(verify, cold, tool="ethosu-artifacts", env=off)
    b = run_cli(verify, hot, tool="ethosu-artifacts", env=runtime_env)
    assert (a.returncode, b.returncode) == (0, 0), (a.stdout + a.stderr[-2000:], b.stdout + b.stderr[-2000:])
    assert b.stdout.startswith("MATCH") and _messages(a, cold) == _messages(b, hot)
    assert int(_status(runtime_env, tmp_path)["builds"]) == builds + 1

    # Two callers at once: two builds side by side, each its own.
    builds = int(_status(runtime_env, tmp_path)["builds"])
    both = [
        subprocess.Popen(
            [str(BIN / "ethosu-build"), *REPO, "model=tiny_net", f"target={t}"],
            cwd=hot,
            env={**os.environ, **runtime_env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in ("ethos-u85-256", "ethos-u65-256")
    ]
    for p in both:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and FALLBACK not in err, err[-2000:]
    assert int(_status(runtime_env, tmp_path)["builds"]) == builds + 2
    assert_store_consistent(hot / "store")

    # The user's model code is read by each build, not kept by the service.
    before = {p.parent.name for p in (hot / "store" / "artifacts" / "tiny_net").glob("*/model.pte")}
    nets = hot / "mymodels" / "nets.py"
    nets.write_text(
        nets.read_text().replace("self.classifier = nn.Linear(width, 4)", "self.classifier = nn.Linear(width, 5)")
    )
    edited = run_cli([*REPO, *OUTCOMES["good build"][0]], hot, env=runtime_env)
    assert edited.returncode == 0 and FALLBACK not in edited.stderr, edited.stderr[-2000:]
    assert "export: running" in edited.stdout + edited.stderr
    (new,) = {p.parent.name for p in (hot / "store" / "artifacts" / "tiny_net").glob("*/model.pte")} - before
    assert (hot / "store/artifacts/tiny_net" / new / "model.pte").read_bytes() != (hot / pte).read_bytes()

    # The service killed in the middle of a build: the caller says so, nothing half-written is
    # stored, and the next build runs in its own process after one line.
    service = int(_status(runtime_env, tmp_path)["pid"])
    versions = {p.name for p in (hot / "store" / "artifacts" / "tiny_net").iterdir() if p.is_dir()}
    victim = subprocess.Popen(
        [str(BIN / "ethosu-build"), *REPO, "model=tiny_net", "target=ethos-u55-128", "calibration.num_samples=48"],
        cwd=hot,
        env={**os.environ, **runtime_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in victim.stdout:
        if "quantize: running" in line:
            break
    for pid in _service_processes(service):
        os.kill(pid, signal.SIGKILL)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 1, err
    assert "warm build service stopped during the build" in err
    # the killed build left no version, and the store checks out
    assert {p.name for p in (hot / "store" / "artifacts" / "tiny_net").iterdir() if p.is_dir()} == versions
    assert_store_consistent(hot / "store")
    after = run_cli([*REPO, *OUTCOMES["good build"][0]], hot, env=runtime_env)
    assert after.returncode == 0, after.stderr[-2000:]
    assert [line for line in after.stderr.splitlines() if "warm build service" in line] == [
        f"ethosu-build: warm build service not answering (Connection refused); {FALLBACK}"
    ]
    assert {p.name for p in (hot / "store" / "artifacts" / "tiny_net").iterdir() if p.is_dir()} == versions


@pytest.fixture
def short_tmp():
    """A temporary folder short enough for a socket path (pytest's tmp_path is not)."""
    folder = Path(tempfile.mkdtemp(prefix="w"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_runtime_directory_must_be_the_users_alone(short_tmp, monkeypatch):
    """A directory another user could enter or replace is never used: no socket is created
    in it, none is connected to."""
    base = short_tmp / "xdg"
    base.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(base))
    folder = base / f"ethosu-build-{os.getuid()}"
    with pytest.raises(warm.WarmUnavailable, match="does not exist"):
        warm.paths()
    assert warm.paths(create=True).socket.parent == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o755)
    with pytest.raises(warm.WarmUnavailable, match="open to other users"):
        warm.paths(create=True)
    folder.rmdir()
    elsewhere = short_tmp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    folder.symlink_to(elsewhere)
    with pytest.raises(warm.WarmUnavailable, match="not a directory"):
        warm.paths(create=True)
    folder.unlink()
    if os.getuid() == 0:
        folder.mkdir(mode=0o700)
        os.chown(folder, 65534, 65534)
        with pytest.raises(warm.WarmUnavailable, match="belongs to uid 65534"):
            warm.paths()


def test_warm_command_line_errors(short_tmp, monkeypatch):
    tmp_path = short_tmp
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    res = run_cli(["--warm", "restart"], tmp_path, env=env)
    assert res.returncode == 2
    assert "--warm: 'restart' is not accepted; accepted: start, stop, status" in res.stderr
    res = run_cli(["--warm", "start", "--idle", "soon"], tmp_path, env=env)
    assert res.returncode == 2 and "--idle: 'soon' is not a positive number" in res.stderr
    res = run_cli(["store.root=store"], tmp_path, env={**env, "ETHOSU_BUILD_WARM": "sometimes"})
    assert res.returncode == 2
    assert "ETHOSU_BUILD_WARM='sometimes' is not accepted; accepted: auto, on (1), off (0)" in res.stderr
    res = run_cli(["--warm", "status"], tmp_path, env=env)
    assert res.returncode == 1 and "no warm build service runs" in res.stdout

    # A socket nobody answers (what a killed service leaves): one line, then the command runs
    # in its own process (here it finds a config error).
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(warm.paths(create=True).socket))
    dead.close()
    res = run_cli(["store.root=store", "calibration.num_samples=0"], tmp_path, env=env)
    assert res.returncode == 2
    assert f"warm build service not answering (Connection refused); {FALLBACK}" in res.stderr
    assert "calibration.num_samples" in res.stderr
    # `--warm stop` forgets a dead service's socket: builds are silent again
    assert run_cli(["--warm", "stop"], tmp_path, env=env).returncode == 0
    res = run_cli(["store.root=store", "calibration.num_samples=0"], tmp_path, env=env)
    assert res.returncode == 2 and "warm build service" not in res.stderr


@pytest.mark.slow
def test_warm_on_starts_a_service_for_the_next_build(short_tmp):
    """ETHOSU_BUILD_WARM=on with no service: this command runs in its own process and says
    so; a service starts in the background and serves the next one."""
    env = {"XDG_RUNTIME_DIR": str(short_tmp), "ETHOSU_BUILD_WARM": "on"}
    try:
        first = run_cli(["store.root=store", "calibration.num_samples=0"], short_tmp, env=env)
        assert first.returncode == 2 and "calibration.num_samples" in first.stderr
        assert f"warm build service starting in the background; {FALLBACK}" in first.stderr
        deadline = time.monotonic() + 300
        while run_cli(["--warm", "status"], short_tmp, env=env).returncode and time.monotonic() < deadline:
            time.sleep(0.5)
        second = run_cli(["store.root=store", "calibration.num_samples=0"], short_tmp, env=env)
        assert second.returncode == 2 and FALLBACK not in second.stderr
        assert _status(env, short_tmp)["builds"] == "1"
    finally:
        run_cli(["--warm", "stop"], short_tmp, env=env)
