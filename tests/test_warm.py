"""Warm builds (docs/warm.md): a build through the service is one without it, byte for byte and
message for message; the service is the user's alone; a dead service costs one line."""

from __future__ import annotations

import os
import re
import resource
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
from ethosu_build.errors import EXIT_BUILD_FAILED, EXIT_CONFIG_ERROR, EXIT_OK, ConfigError
from ethosu_build.switches import ACCEPTED

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


def _runtime_env():
    """A runtime directory of the test's own, short enough for a socket path."""
    folder = tempfile.mkdtemp(prefix="w")
    env = {"XDG_RUNTIME_DIR": folder, "ETHOSU_BUILD_WARM": "auto"}
    yield env
    subprocess.run([str(BIN / "ethosu-build"), "--warm", "stop"], env={**os.environ, **env}, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


runtime_env = pytest.fixture(_runtime_env, name="runtime_env")
caller_env = pytest.fixture(_runtime_env, scope="module", name="caller_env")  # a service for several tests


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


def test_the_warm_switch_takes_the_spellings_of_every_switch():
    """ETHOSU_BUILD_WARM and ETHOSU_BUILD_BACKGROUND share one parser (switches.py): the same
    spellings, in any case, and the same error for anything else (test_background.py: the other)."""
    for value, expected in (("", "auto"), (" Auto ", "auto"), ("ON", "on"), ("1", "on"), ("true", "on"),
                            ("Yes", "on"), ("off", "off"), ("0", "off"), ("FALSE", "off"), ("no", "off")):  # fmt: skip
        assert warm.mode({"ETHOSU_BUILD_WARM": value}) == expected, value
    assert warm.mode({}) == "auto"
    for value in ("sometimes", "2", "enabled"):
        with pytest.raises(ConfigError) as refused:
            warm.mode({"ETHOSU_BUILD_WARM": value})
        assert refused.value.exit_code == EXIT_CONFIG_ERROR
        assert str(refused.value.issues[0]) == f"ETHOSU_BUILD_WARM: {value!r} is not accepted; accepted: {ACCEPTED}"


def test_warm_command_line_errors(short_tmp, monkeypatch):
    tmp_path = short_tmp
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    res = run_cli(["--warm", "restart"], tmp_path, env=env)
    assert res.returncode == 2
    assert "--warm: 'restart' is not accepted; accepted: start, stop, status" in res.stderr
    res = run_cli(["--warm"], tmp_path, env=env)
    assert res.returncode == EXIT_CONFIG_ERROR and "--warm needs an action: start, stop or status (" in res.stderr
    # --idle takes what the service's timer honours, nothing else (inf once crashed the service)
    for value in ("soon", "inf", "nan", "-5", "0", "1e12"):
        res = run_cli(["--warm", "start", "--idle", value], tmp_path, env=env)
        assert res.returncode == EXIT_CONFIG_ERROR, value
        assert f"--idle: {value!r} is not accepted; accepted: a number of seconds greater than 0" in res.stderr
    res = run_cli(["--warm", "start", "--idle"], tmp_path, env=env)
    assert res.returncode == EXIT_CONFIG_ERROR and "--idle needs a number of seconds" in res.stderr
    # ETHOSU_BUILD_WARM's value: the one error of switches.py (ETHOSU_BUILD_BACKGROUND's too), for
    # a build and for --warm alike
    bad = f"ETHOSU_BUILD_WARM: 'sometimes' is not accepted; accepted: {ACCEPTED}"
    for args in (["store.root=store"], ["--warm", "status"]):
        res = run_cli(args, tmp_path, env={**env, "ETHOSU_BUILD_WARM": "sometimes"})
        assert res.returncode == EXIT_CONFIG_ERROR and bad in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
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


def test_runtime_folder_is_not_in_a_shared_folder(short_tmp, monkeypatch):
    """Without XDG_RUNTIME_DIR (or with one others can write, such as /tmp) the socket's folder
    is under the user's cache folder: another user cannot create it first, as they could
    /tmp/ethosu-build-<uid>."""
    shared = short_tmp / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    squatted = shared / f"ethosu-build-{os.getuid()}"  # what another user could have made
    squatted.mkdir(mode=0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(short_tmp / "cache"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    for xdg in (None, str(shared)):
        if xdg:
            monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
        where = warm.paths(create=True)
        assert where.dir.parent == short_tmp / "cache" / "ethosu-build", xdg
        assert where.dir.name.startswith("run-")
        assert stat.S_IMODE(where.dir.stat().st_mode) == 0o700
    if os.getuid() == 0:  # a folder of another user's: the message says what the user can do
        os.chown(where.dir, 65534, 65534)
        with pytest.raises(warm.WarmUnavailable) as caught:
            warm.paths()
        said = str(caught.value)
        assert "belongs to uid 65534" in said and "set XDG_RUNTIME_DIR to a folder of yours" in said


def test_warm_start_notices_a_service_that_died(short_tmp, monkeypatch):
    """A service that ends before it answers (it fails in its imports; a directory stands where its
    socket goes) is reported at once with its log's last line, not after the 300 s of waiting."""
    fake = short_tmp / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise SystemExit('simulated crash of the service')\n")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(short_tmp))
    warm.paths(create=True).socket.mkdir()
    pythonpath = os.pathsep.join(p for p in (str(fake), os.environ.get("PYTHONPATH")) if p)
    t0 = time.monotonic()
    res = run_cli(["--warm", "start"], short_tmp, env={"ETHOSU_BUILD_WARM": "auto", "PYTHONPATH": pythonpath})
    assert time.monotonic() - t0 < 60, res.stderr
    assert res.returncode == EXIT_BUILD_FAILED, res.stdout + res.stderr
    assert "the warm build service exited (code 1) before it was ready: simulated crash of the service" in res.stderr


# A build forked from the service takes what a process started by its caller would inherit. These
# tests share one service, started under a hard RLIMIT_MSGQUEUE one below the tests' own: callers
# lower theirs to match (`_caller`), except one that shows a limit the service cannot take.
MSGQUEUE = resource.RLIMIT_MSGQUEUE
_CALLERS: list[subprocess.Popen] = []


def _at_service_msgqueue() -> None:
    soft, hard = resource.getrlimit(MSGQUEUE)
    lowered = (1 << 20) if hard == resource.RLIM_INFINITY else hard - 1
    resource.setrlimit(MSGQUEUE, (min(soft, lowered), lowered))


@pytest.fixture
def service(caller_env, tmp_path):
    """The module's service (started again if a test killed it), a copy of the user's
    repository, the service's pid. Callers a failed test left (stopped ones too) are killed."""
    start = [str(BIN / "ethosu-build"), "--warm", "start", "--idle", "900"]
    started = subprocess.run(start, env={**os.environ, **caller_env}, text=True, preexec_fn=_at_service_msgqueue)
    assert started.returncode == EXIT_OK
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "user_repo", repo)
    yield caller_env, repo, int(_status(caller_env, tmp_path)["pid"])
    while _CALLERS:
        caller = _CALLERS.pop()
        if caller.poll() is None:
            caller.kill()
            caller.communicate()


def _caller(args: list[str], cwd: Path, env: dict, **attributes) -> subprocess.Popen:
    """`ethosu-build ARGS` as a shell's job (its own group) with umask, fsize, stack, nice, cpus, ignore."""

    def setup() -> None:
        _at_service_msgqueue()
        if "umask" in attributes:
            os.umask(attributes["umask"])
        for name in ("fsize", "stack"):
            if name in attributes:
                which = getattr(resource, f"RLIMIT_{name.upper()}")
                resource.setrlimit(which, (attributes[name], resource.getrlimit(which)[1]))
        os.nice(attributes.get("nice", 0))
        if "cpus" in attributes:
            os.sched_setaffinity(0, attributes["cpus"])
        for sig in attributes.get("ignore", ()):
            signal.signal(sig, signal.SIG_IGN)

    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    command = [str(BIN / "ethosu-build"), *args]
    _CALLERS.append(
        subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, preexec_fn=setup, process_group=0, **pipes)
    )
    return _CALLERS[-1]


def _modes(root: Path) -> list[tuple[str, str]]:
    """Each file's and folder's mode, named without the run's date and time."""
    return sorted(
        (re.sub(r"\d[\d-]+", "<t>", str(p.relative_to(root))), oct(stat.S_IMODE(p.lstat().st_mode)))
        for p in root.rglob("*")
    )


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat after the name: the state first (T stopped, Z ended), user and system CPU
    time at 11 and 12; ["gone"] once reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except FileNotFoundError:
        return ["gone"]


def _until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def _build_child(victim: subprocess.Popen, service_pid: int, cwd: Path) -> int:
    """The service's child building for `victim` (in its folder), once it has begun to quantize."""
    for line in victim.stdout:
        if "quantize: running" in line:
            break
    (child,) = [
        pid for pid in _service_processes(service_pid)[1:] if Path(f"/proc/{pid}/cwd").resolve() == cwd.resolve()
    ]
    return child


TINY = [*REPO, *OUTCOMES["good build"][0]]


def test_warm_build_takes_the_callers_umask_and_limits(service, tmp_path):
    """`umask 077; ulimit -f 4; ethosu-build ...`: the same exit code, messages and file modes
    through the service as in the caller's own process (where the service once wrote 0644
    files, 0755 folders, and ignored the file size limit)."""
    env, repo, _pid = service
    shutil.copytree(FIXTURES / "user_repo", cold := tmp_path / "cold")
    builds = int(_status(env, tmp_path)["builds"])
    outcomes = []
    for where, mode in ((cold, "off"), (repo, "auto")):
        p = _caller(TINY, where, {**env, "ETHOSU_BUILD_WARM": mode}, umask=0o077, fsize=4096)
        out, err = p.communicate(timeout=600)
        outcomes.append((p.returncode, _messages(subprocess.CompletedProcess([], p.returncode, out, err), where)))
    assert outcomes[0] == outcomes[1] and outcomes[0][0] != EXIT_OK, outcomes
    assert int(_status(env, tmp_path)["builds"]) == builds + 1  # it went through the service
    assert _modes(cold / "store") == _modes(repo / "store")
    assert {mode for _, mode in _modes(repo / "store")} <= {"0o600", "0o700"}, _modes(repo / "store")

    # A hard limit above the service's own (it cannot raise it), or another stack size (set
    # when a process starts): the build runs in the caller's process, after one line.
    res = run_cli([*REPO, "calibration.num_samples=0"], repo, env=env)
    assert res.returncode == EXIT_CONFIG_ERROR and "calibration.num_samples" in res.stderr
    (line,) = [line for line in res.stderr.splitlines() if "warm build service" in line]
    assert "cannot take this command's RLIMIT_MSGQUEUE" in line and line.endswith(FALLBACK), line
    p = _caller([*REPO, "calibration.num_samples=0"], repo, env, stack=4 << 20)
    _, err = p.communicate(timeout=600)
    assert p.returncode == EXIT_CONFIG_ERROR and f"another stack size limit (ulimit -s: {4 << 20}" in err, err
    assert int(_status(env, tmp_path)["builds"]) == builds + 1


def test_ctrl_z_stops_the_warm_build(service, tmp_path):
    """Job control is the caller's: SIGTSTP (Ctrl-Z) stops the build, then the caller; SIGCONT
    (fg, bg) continues both. The build also runs at the caller's nice value, on its CPUs,
    ignoring what it ignores (nohup)."""
    env, repo, service_pid = service
    nice = os.getpriority(os.PRIO_PROCESS, 0) + 3
    cpus = {min(os.sched_getaffinity(0))}
    victim = _caller(TINY, repo, env, nice=3, cpus=cpus, ignore=(signal.SIGHUP,))
    child = _build_child(victim, service_pid, repo)
    os.kill(victim.pid, signal.SIGTSTP)
    assert _until(lambda: _stat(victim.pid)[0] == _stat(child)[0] == "T"), (_stat(victim.pid), _stat(child))
    cpu = _stat(child)[11:13]
    time.sleep(1.0)
    assert _stat(child)[11:13] == cpu  # it did not run
    assert not (repo / "store" / "artifacts" / "tiny_net").exists()
    assert os.getpriority(os.PRIO_PROCESS, child) == nice
    assert os.sched_getaffinity(child) == cpus
    ignored = int(re.search(r"^SigIgn:\s*(\w+)", Path(f"/proc/{child}/status").read_text(), re.M).group(1), 16)
    assert ignored & (1 << (signal.SIGHUP - 1))
    os.kill(victim.pid, signal.SIGCONT)
    _, err = victim.communicate(timeout=600)
    assert victim.returncode == EXIT_OK and FALLBACK not in err, err[-2000:]
    assert (repo / "store" / "artifacts" / "tiny_net" / "v1" / "model.pte").is_file()


def test_warm_build_never_outlives_its_caller_or_its_service(service, tmp_path):
    """A caller killed while its build is stopped (Ctrl-Z, then kill -9): the build ends. The
    service killed (kill -9, the OOM killer) during a build: the build ends with it, and the
    caller reports only once no process of the build is left, so that nothing is published
    after it said nothing was stored (the orphaned build once published seconds later)."""
    env, repo, service_pid = service
    artifacts = repo / "store" / "artifacts"
    victim = _caller(TINY, repo, env)
    child = _build_child(victim, service_pid, repo)
    os.kill(victim.pid, signal.SIGTSTP)
    assert _until(lambda: _stat(child)[0] == "T")
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate(timeout=60)
    assert _until(lambda: _stat(child)[0] in ("Z", "gone")), _stat(child)
    assert not list(artifacts.glob("*/v*"))

    victim = _caller(TINY, repo, env)
    child = _build_child(victim, service_pid, repo)
    os.kill(service_pid, signal.SIGKILL)
    _, err = victim.communicate(timeout=120)
    assert _stat(child)[0] in ("Z", "gone")  # already when the caller has ended
    assert victim.returncode == EXIT_BUILD_FAILED, err[-2000:]
    assert "the warm build service stopped during the build; the build was ended with it" in err
    time.sleep(1.0)
    assert not list(artifacts.glob("*/v*"))
    assert_store_consistent(repo / "store")
