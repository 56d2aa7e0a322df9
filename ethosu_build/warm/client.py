"""The caller's side of a warm build, and `ethosu-build --warm start|stop|status`.

Loaded by every invocation before anything heavy (cli.py): the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time

from . import ENV_VAR, NeverStarted, Paths, Reader, WarmUnavailable, fingerprint, mode, paths, send

START_TIMEOUT = 300.0  # seconds a `--warm start` waits for the imports (about 10-20 s here)
# Signals a terminal or a job controller sends to the caller, passed on to the build's group.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def _say(prog: str, text: str) -> None:
    print(f"{prog}: {text}", file=sys.stderr, flush=True)


def _connect(where: Paths, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(where.socket))
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
    with sock:
        try:
            send(
                sock,
                {
                    "op": "build",
                    "prog": prog,
                    "argv": argv,
                    "cwd": os.getcwd(),
                    "env": dict(os.environ),
                    "path0": sys.path[0],
                    "fingerprint": fingerprint(),
                },
                [0, 1, 2],
            )
            reader = Reader(sock)
            reply = reader.read()
        except (OSError, ValueError) as exc:
            return fallback(f"failed ({exc})")
        if reply is None or "pid" not in reply:
            reply = reply or {}
            return fallback(reply.get("refused", "closed the connection"), restart=bool(reply.get("stale")))
        return _wait(prog, sock, reader, int(reply["pid"]))


def _wait(prog: str, sock: socket.socket, reader: Reader, pid: int) -> int:
    """Until the build ends: the caller's signals go to the build's process group (a terminal's
    Ctrl-C reaches the build and its sweep workers, as it would in one process)."""

    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            os.killpg(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    sock.settimeout(None)
    try:
        result = reader.read()
    except (OSError, ValueError):
        result = None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if result is None:
        _say(prog, "the warm build service stopped during the build; nothing half-written was stored")
        return 1
    if "signal" in result:  # end as the build ended, so that a shell sees the same status
        signal.signal(result["signal"], signal.SIG_DFL)
        os.kill(os.getpid(), result["signal"])
        return 128 + result["signal"]
    return int(result["exit"])


def _spawn(where: Paths, idle: float | None = None):
    import subprocess

    command = [sys.executable, "-m", "ethosu_build.warm.service"]
    if idle is not None:
        command += ["--idle", str(idle)]
    fd = os.open(where.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        return subprocess.Popen(
            command, cwd="/", stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True, close_fds=True
        )
    finally:
        os.close(fd)


def _status(where: Paths) -> dict | None:
    try:
        return _request(where, {"op": "status"})
    except OSError:
        return None


def command(prog: str, args: list[str]) -> int:
    """`--warm start [--idle SECONDS] | stop | status`; exit 2 for anything else."""
    usage = f"{prog} --warm start [--idle SECONDS] | {prog} --warm stop | {prog} --warm status"
    action, rest = (args[0], args[1:]) if args else (None, [])
    idle = None
    if action == "start" and len(rest) == 2 and rest[0] == "--idle":
        try:
            idle = float(rest[1])
        except ValueError:
            idle = -1.0
        if not idle > 0:
            _say(prog, f"--idle: {rest[1]!r} is not a positive number of seconds; usage: {usage}")
            return 2
        rest = []
    if action not in ("start", "stop", "status") or rest:
        got = " ".join(args) or "nothing"
        _say(prog, f"--warm: {got!r} is not accepted; accepted: start, stop, status (usage: {usage})")
        return 2
    try:
        mode()
        where = paths(create=action == "start")
    except ValueError as exc:
        _say(prog, str(exc))
        return 2
    except WarmUnavailable as exc:
        if action == "start":
            _say(prog, f"cannot start the warm build service: {exc}")
            return 1
        print("no warm build service runs for this install")
        return 1 if action == "status" else 0
    current = _status(where)
    if action == "status":
        if current is None:
            print("no warm build service runs for this install")
            return 1
        fresh = current.get("fingerprint") == fingerprint()
        for key, value in current.items():
            print(f"{key}: {value}")
        print(f"code: {'current' if fresh else 'older than this install (the next build restarts it)'}")
        if mode() == "off":
            print(f"note: {ENV_VAR} is off in this shell, so builds here do not use it")
        return 0
    if action == "stop":
        if current is None:
            _forget_dead(where)
            print("no warm build service runs for this install")
            return 0
        _stop(where)
        print(f"stopped the warm build service (pid {current['pid']}, {current['builds']} builds)")
        return 0
    # start
    if current is not None:
        if current.get("fingerprint") == fingerprint():
            print(f"the warm build service runs already (pid {current['pid']}, {where.socket})")
            return 0
        _stop(where)  # older code: replace it
    t0 = time.monotonic()
    process = _spawn(where, idle)
    while time.monotonic() - t0 < START_TIMEOUT:
        current = _status(where)
        if current is not None:
            print(
                f"warm build service ready in {time.monotonic() - t0:.1f} s (pid {current['pid']}, {where.socket}); "
                f"builds of this install now go through it ({ENV_VAR}=off to build without it)"
            )
            return 0
        if process.poll() is not None and not os.path.exists(where.socket):
            break
        time.sleep(0.2)
    _say(prog, f"the warm build service did not start; see {where.log}")
    return 1


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
