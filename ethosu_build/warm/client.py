"""The caller's side of a warm build, and `ethosu-build --warm start|stop|status`.

Loaded by every invocation before anything heavy (cli.py): the standard library only. The
exit codes of errors.py are imported where they are returned, off a warm build's path
(that module's imports take 10 ms).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
import sys
import time

from . import (
    ENV_VAR,
    RLIMITS,
    NeverStarted,
    Paths,
    Reader,
    WarmUnavailable,
    caller_process,
    fingerprint,
    idle_seconds,
    mode,
    paths,
    send,
)

START_TIMEOUT = 300.0  # seconds a `--warm start` waits for the imports (about 10-20 s here)
GROUP_WAIT = 10.0  # seconds a caller whose service died waits for the build's processes to end
# Signals a terminal or a job controller sends to the caller, passed on to the build's group.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# Job control (Ctrl-Z; a background job reading or writing a terminal that stops them): the
# build stops with the caller. The build is not in the terminal's session, so the terminal
# never sends these to it directly.
JOB_CONTROL = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def _say(prog: str, text: str) -> None:
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def _connect(where: Paths, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(where.socket))
        # Our descriptors and environment go only to a service of our own user: a socket another
        # user bound (where only root or we could have put it) is refused before anything is sent.
        _, uid, _ = struct.unpack("iII", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.geteuid():  # an OSError: every caller falls back as for a dead service
            raise PermissionError(errno.EPERM, f"its socket {where.socket} belongs to uid {uid}, not to you")
    except OSError:
        sock.close()
        raise
    return sock


def _request(where: Paths, message: dict) -> dict | None:
    with _connect(where) as sock:
        send(sock, message)
        return Reader(sock).read()


def build(prog: str, argv: list[str]) -> int | None:
    """Runs the command (`argv` as sys.argv, the program first) in the warm service and returns
    its exit code, or None: build in this process (after one line on stderr saying why, unless
    no service was ever asked for)."""
    warm = mode()
    if warm == "off":
        return None
    try:
        where = paths(create=warm == "on")
    except WarmUnavailable as exc:
        if not isinstance(exc, NeverStarted):
            _say(prog, f"warm build service unusable: {exc}; building in this process")
        return None
    if not os.path.lexists(where.socket):
        if warm == "on":
            _spawn(where)
            _say(prog, "warm build service starting in the background; building in this process")
        return None

    def fallback(why: str, restart: bool = False) -> None:
        if restart or warm == "on":
            _spawn(where)
        _say(prog, f"warm build service {why}; building in this process")

    try:
        sock = _connect(where)
    except OSError as exc:  # a dead service's socket, or one still importing
        return fallback(f"not answering ({exc.strerror or exc})")
    # Ctrl-Z between the request and the build's pid would stop this process and not the
    # build: held back until _wait can pass it on (or until the fallback, which takes it itself).
    held = signal.pthread_sigmask(signal.SIG_BLOCK, JOB_CONTROL)
    try:
        with sock:
            try:
                send(sock, _request_for(prog, argv), [0, 1, 2])
                reader = Reader(sock)
                reply = reader.read()
            except (OSError, ValueError) as exc:
                return fallback(f"failed ({exc})")
            if reply is None or "pid" not in reply:
                reply = reply or {}
                return fallback(reply.get("refused", "closed the connection"), restart=bool(reply.get("stale")))
            return _wait(prog, sock, reader, int(reply["pid"]), held)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _request_for(prog: str, argv: list[str]) -> dict:
    return {
        "op": "build",
        "prog": prog,
        "argv": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "path0": sys.path[0],
        "caller": caller_process(),
        "fingerprint": fingerprint(),
    }


def _wait(prog: str, sock: socket.socket, reader: Reader, pid: int, held: set) -> int:
    """Until the build ends: the caller's signals go to the build's process group (a terminal's
    Ctrl-C reaches the build and its sweep workers, as it would in one process), and its job
    control too: Ctrl-Z stops the build, then this process; `fg` or `bg` continues both."""

    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            os.killpg(pid, signum)

    def suspend(signum, _frame):
        # The build first: once this process has stopped, it can pass nothing on.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGSTOP)
        signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
        os.kill(os.getpid(), signum)  # stops here until SIGCONT (the kernel drops it in an orphaned group)
        signal.signal(signum, suspend)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGCONT)

    handlers = {sig: forward for sig in FORWARDED} | {sig: suspend for sig in JOB_CONTROL}
    handlers[signal.SIGCONT] = forward  # a `kill -CONT` of this process alone continues the build too
    # A signal the caller ignores (nohup, `&` in a script) stays ignored here, as in the build.
    previous = {
        sig: signal.signal(sig, handler) for sig, handler in handlers.items() if signal.getsignal(sig) != signal.SIG_IGN
    }
    signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a Ctrl-Z held back since the request: now passed on
    sock.settimeout(None)
    try:
        result = reader.read()
    except (OSError, ValueError):
        result = None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result is None:
        return _lost(prog, pid)
    if "signal" in result:  # end as the build ended, so that a shell sees the same status
        signal.signal(result["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), result["signal"])
        return 128 + result["signal"]
    return int(result["exit"])


def _lost(prog: str, pid: int) -> int:
    """The service ended during the build (killed, out of memory). The build dies with it
    (child.py); its process group is ended here too, and only once nothing of it is left is
    the caller told: a build that went on would publish after the caller was told it did not."""
    from ..errors import EXIT_BUILD_FAILED

    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + GROUP_WAIT
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if _group_alive(pid):
        _say(
            prog,
            f"the warm build service stopped during the build, and the build (process group {pid}) "
            "did not end when killed; it may still store its result",
        )
    else:
        _say(
            prog,
            "the warm build service stopped during the build; the build was ended with it, "
            "and nothing half-written was stored",
        )
    return EXIT_BUILD_FAILED


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (a zombie no longer computes; it may wait for
    a parent that does not reap it, as PID 1 in some containers)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def _spawn(where: Paths, idle: float | None = None):
    import subprocess

    command = [sys.executable, "-m", "ethosu_build.warm.service"]
    if idle is not None:
        command += ["--idle", str(idle)]
    fd = os.open(where.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        return subprocess.Popen(
            command,
            cwd="/",
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_service_limits,
        )
    finally:
        os.close(fd)


def _service_limits() -> None:
    """In the service's process before it starts: its soft limits up to their hard ones. Each
    build takes its caller's limits, so the service's soft ones only bound the service itself
    (a `ulimit -f 4` of the shell that started it would stop its log). Its hard limits stay
    those of that shell: a caller with higher ones builds in its own process. The stack's soft
    limit stays too: a build's threads take their stacks' size from it, so the service only
    serves callers with the same one."""
    import resource

    signal.pthread_sigmask(signal.SIG_UNBLOCK, JOB_CONTROL)  # held back by a build() that falls back
    for name in RLIMITS:
        if name == "RLIMIT_STACK":
            continue
        which = getattr(resource, name)
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(which, (resource.getrlimit(which)[1],) * 2)


def _status(where: Paths) -> dict | None:
    try:
        return _request(where, {"op": "status"})
    except OSError:
        return None


def _parse(prog: str, args: list[str]) -> tuple[str, float | None]:
    """`start [--idle SECONDS] | stop | status`, or ValueError with the line the user reads."""
    usage = f"usage: {prog} --warm start [--idle SECONDS] | {prog} --warm stop | {prog} --warm status"
    if not args:
        raise ValueError(f"--warm needs an action: start, stop or status ({usage})")
    action, rest = args[0], args[1:]
    if action not in ("start", "stop", "status"):
        raise ValueError(f"--warm: {action!r} is not accepted; accepted: start, stop, status ({usage})")
    idle = None
    if action == "start" and rest[:1] == ["--idle"]:
        if len(rest) < 2:
            raise ValueError(f"--idle needs a number of seconds ({usage})")
        idle, rest = idle_seconds(rest[1]), rest[2:]
    if rest:
        raise ValueError(f"--warm {action}: {' '.join(rest)!r} is not accepted ({usage})")
    return action, idle


def command(prog: str, args: list[str]) -> int:
    """`--warm start [--idle SECONDS] | stop | status`; a config error (exit 2) for anything else."""
    from ..errors import EXIT_BUILD_FAILED, EXIT_CONFIG_ERROR, EXIT_OK, ConfigError

    # `--warm status` when no service runs: 1, as `systemctl is-active` and `pgrep` say "no" with
    # a nonzero code, so that a script can test it (docs/warm.md).
    not_running = EXIT_BUILD_FAILED
    try:
        action, idle = _parse(prog, args)
        mode()
    except ValueError as exc:
        _say(prog, str(exc))
        return EXIT_CONFIG_ERROR
    except ConfigError as exc:  # ETHOSU_BUILD_WARM's value (switches.py): one line, as the others here
        _say(prog, "; ".join(str(issue) for issue in exc.issues))
        return exc.exit_code
    try:
        where = paths(create=action == "start")
    except WarmUnavailable as exc:
        if action == "start":
            _say(prog, f"cannot start the warm build service: {exc}")
            return EXIT_BUILD_FAILED
        print("no warm build service runs for this install")
        return not_running if action == "status" else EXIT_OK
    current = _status(where)
    if action == "status":
        if current is None:
            print("no warm build service runs for this install")
            return not_running
        fresh = current.get("fingerprint") == fingerprint()
        for key, value in current.items():
            print(f"{key}: {value}")
        print(f"code: {'current' if fresh else 'older than this install (the next build restarts it)'}")
        if mode() == "off":
            print(f"note: {ENV_VAR} is off in this shell, so builds here do not use it")
        return EXIT_OK
    if action == "stop":
        if current is None:
            _forget_dead(where)
            print("no warm build service runs for this install")
            return EXIT_OK
        _stop(where)
        print(f"stopped the warm build service (pid {current['pid']}, {current['builds']} builds)")
        return EXIT_OK
    if current is not None:
        if current.get("fingerprint") == fingerprint():
            print(f"the warm build service runs already (pid {current['pid']}, {where.socket})")
            return EXIT_OK
        _stop(where)  # older code: replace it
    return _start(prog, where, idle)


def _start(prog: str, where: Paths, idle: float | None) -> int:
    """Starts the service and waits until it answers, or until its process has ended: a service
    that failed is reported at once, with the last line of its log."""
    from ..errors import EXIT_BUILD_FAILED, EXIT_OK

    t0 = time.monotonic()
    process = _spawn(where, idle)
    while time.monotonic() - t0 < START_TIMEOUT:
        ended = process.poll() is not None  # read before asking: a service that answered then ended is not ready
        current = _status(where)
        if current is not None and not ended:
            print(
                f"warm build service ready in {time.monotonic() - t0:.1f} s (pid {current['pid']}, {where.socket}); "
                f"builds of this install now go through it ({ENV_VAR}=off to build without it)"
            )
            return EXIT_OK
        if ended:
            if current is not None:  # another start won the install's lock; that service answers
                print(f"the warm build service runs already (pid {current['pid']}, {where.socket})")
                return EXIT_OK
            _say(
                prog,
                f"the warm build service exited (code {process.returncode}) before it was ready{_last_line(where)}",
            )
            return EXIT_BUILD_FAILED
        time.sleep(0.2)
    process.kill()
    _say(prog, f"the warm build service did not start within {START_TIMEOUT:.0f} s{_last_line(where)}")
    return EXIT_BUILD_FAILED


def _last_line(where: Paths) -> str:
    try:
        with open(where.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return f": {lines[-1].strip()} (see {where.log})" if lines else f"; see {where.log}"


def _forget_dead(where: Paths) -> None:
    """Removes the socket of a service that died without removing it (killed): no service
    holds the install's lock. Until then each build says, in one line, that it did not answer."""
    import fcntl

    try:
        fd = os.open(where.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a service, even one still importing
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where.socket)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _stop(where: Paths) -> None:
    """Asks the service to stop (running builds finish) and waits until it has let go of its
    socket."""
    with contextlib.suppress(OSError):
        _request(where, {"op": "stop"})
    deadline = time.monotonic() + 10
    while os.path.lexists(where.socket) and time.monotonic() < deadline:
        time.sleep(0.05)
