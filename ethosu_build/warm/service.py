"""The warm build service: `python -m ethosu_build.warm.service` (started by
`ethosu-build --warm start`, docs/warm.md).

One process imports torch, ExecuTorch and ethosu-build once and never computes; each build is
a child forked from it, which becomes the caller's build (their descriptors, directory,
environment and argv), runs `main()` once and exits. Why fork rather than pre-started spare
interpreters: a fork is ready in about 25 ms and costs no CPU, where a spare needs 8-20 s of
imports to replace, so back-to-back builds and sweeps would wait for spares or fall back.
Fork's known hazard is a process whose threads hold locks at the fork; this process only
imports (torch's import starts one native thread of its own, the one PyTorch's DataLoader
also forks past), and it refuses to fork, and restarts, if its thread count ever grows.

The loop is single-threaded (selectors): the listening socket, a wake-up socket for signals
(SIGCHLD when a build ends, SIGTERM to stop), and each running build's connection, whose
end while its build runs means the caller's process is gone (the build's process group is then
killed, as the build would have been in that process). The child's side is child.py: it takes
the caller's umask, resource limits and the like, and dies with the service.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import importlib
import logging
import os
import pkgutil
import resource
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

from ..errors import EXIT_BUILD_FAILED, EXIT_OK
from . import Paths, Reader, WarmUnavailable, child, fingerprint, idle_seconds, import_time_env, paths, send

log = logging.getLogger("ethosu_build.warm")

IDLE_SECONDS = 3 * 3600  # as Gradle's daemon: a service nobody used for 3 hours stops
MAX_BUILDS = 8  # builds at once; more fall back to their own process
LOCK_WAIT = 60.0  # seconds a new service waits for a stopping one to end
REPORT_WAIT = 10.0  # seconds a new build's child may take to say it has the caller's limits
# The longest wait of the loop at a time: any idle timeout is honoured in steps (the selector's
# own bound is about 24 days).
MAX_WAIT = 3600.0

# What every build imports besides ethosu-build itself (whose modules are all imported): the
# default build's stages, the joblib launcher, the sweep summary's plot. Importing one of these
# has no effect on a build beyond saving its time; modules with side effects on what a build
# computes (executorch.kernels.quantized registers kernels) are left to the builds that need them.
PRELOAD = (
    "torch",
    "torchao.quantization.pt2e.quantize_pt2e",
    "torchao.quantization.pt2e.utils",
    "torch.export._trace",  # torch.export imports these on its first call
    "torch.export._unlift",
    "torch._export.passes",
    "torch._functorch._aot_autograd",
    "sympy.tensor.tensor",
    "sympy.combinatorics",
    "ml_dtypes",
    "executorch.exir",
    "executorch.extension.flat_tensor.serialize.serialize",
    "executorch.exir._serialize._program",
    "executorch.backends.arm.ethosu",
    "executorch.backends.arm.ethosu.backend",
    "executorch.backends.arm.quantizer",
    "executorch.backends.arm.arm_vela",
    "executorch.backends.arm.tosa.partitioner",
    "executorch.backends.cortex_m.passes.replace_quant_nodes_pass",
    "tosa_reference_model",
    "PIL.Image",
    "rich.progress",
    "joblib",
    "hydra_plugins.hydra_joblib_launcher.joblib_launcher",
    "optuna",
    "mlflow.tracking",  # tracking=mlflow; absent unless the tracking extra is installed
)


def preload() -> list[str]:
    """Imports what builds import; returns the modules that failed (logged, not fatal)."""
    from .. import numerics

    numerics.pin()  # before torch loads, as the console scripts do
    failed = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as exc:  # an optional extra not installed: its builds import it themselves
            log.info("not preloaded: %s (%s)", name, exc)
            failed.append(name)
    import matplotlib

    matplotlib.use("Agg")  # what the sweep summary and search report select before pyplot
    importlib.import_module("matplotlib.pyplot")
    import ethosu_build

    skip = ("ethosu_build.warm", "ethosu_build.models.train_")
    for info in pkgutil.walk_packages(ethosu_build.__path__, "ethosu_build."):
        # nor a __main__ (python -m's entry: importing it would run a command)
        if not info.name.startswith(skip) and not info.name.endswith(".__main__"):
            importlib.import_module(info.name)
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's scan of hydra_plugins (launchers, sweepers), done once per process
    # Every object so far is the children's to share: left out of garbage collection, so that
    # a collection in a child does not write to (and so copy) the pages holding them.
    gc.freeze()
    return failed


def native_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:  # not Linux: Python's own count is all there is
        return threading.active_count()


@dataclass
class Service:
    listener: socket.socket | None
    paths: Paths
    fingerprint: str
    idle: float
    max_builds: int
    threads: int
    env: dict[str, str]  # the import-time variables it started with (import_time_env)
    set_by_imports: frozenset[str]  # variables its imports set themselves: not compared
    started: float = field(default_factory=time.time)
    builds: int = 0
    stopping: bool = False
    children: dict[int, socket.socket] = field(default_factory=dict)
    inode: int = 0  # the socket file's: removed at the end only if still this service's
    lock_fd: int = -1  # held for the service's life: one service per install
    stack: int = -1  # its soft RLIMIT_STACK when it started
    groups: list[int] = field(default_factory=lambda: [os.getgid(), os.getegid(), *sorted(os.getgroups())])

    def run(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the loop
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.selector.register(self.listener, selectors.EVENT_READ, "accept")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        last = time.monotonic()
        while not (self.stopping and not self.children):
            timeout = None if self.children else min(MAX_WAIT, max(0.0, last + self.idle - time.monotonic()))
            events = self.selector.select(timeout)
            if not events and not self.children and time.monotonic() >= last + self.idle:
                log.info("idle for %.0f s: stopping", self.idle)
                break
            for key, _ in events:
                if key.data == "accept":
                    last = time.monotonic()
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        self.wake_r.recv(4096)
                else:  # a running build's caller closed its end: the caller is gone
                    self._caller_gone(key.data)
            self._reap()
            if self.children:
                last = time.monotonic()
        self._close_listener()

    def _on_stop(self, *_):
        self.stopping = True  # the loop closes the listener; running builds finish

    def _close_listener(self) -> None:
        if self.listener is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(self.listener)
        # Remove the socket only if it is still ours (a new service may have bound the name).
        with contextlib.suppress(OSError):
            if os.stat(self.paths.socket).st_ino == self.inode:
                os.unlink(self.paths.socket)
        self.listener.close()
        self.listener = None

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        conn.settimeout(10)  # a caller sends its request at once; a silent one is dropped
        reader = Reader(conn)
        try:
            pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():  # the directory's and socket's modes already keep others out
                log.warning("refused a connection from uid %d", uid)
                raise ValueError("another user")
            message = reader.read()
            if message is None:
                raise ValueError("no request")
            op = message.get("op")
            if op == "build":
                self._build(conn, reader, message)
                return
            if op == "status":
                send(conn, self.status())
            elif op == "stop":
                self.stopping = True
                self._close_listener()
                send(conn, {"stopping": True, "running": len(self.children)})
            else:
                send(conn, {"refused": f"does not know the request {op!r}"})
        except (OSError, ValueError) as exc:
            log.info("dropped a connection: %s", exc)
        for fd in reader.fds:
            os.close(fd)
        conn.close()

    def status(self) -> dict:
        return {
            "pid": os.getpid(),
            "fingerprint": self.fingerprint,
            "uptime_s": round(time.time() - self.started, 1),
            "builds": self.builds,
            "running": len(self.children),
            "max_builds": self.max_builds,
            "idle_timeout_s": self.idle,
            "socket": str(self.paths.socket),
            "log": str(self.paths.log),
            "python": sys.executable,
        }

    def _refusal(self, message: dict, fds: list[int]) -> dict | None:
        if self.stopping:
            return {"refused": "is stopping"}
        if message.get("fingerprint") != self.fingerprint:
            # Started from other code: stop taking builds; the caller starts a new service.
            self.stopping = True
            self._close_listener()
            return {"refused": "runs older code (ethosu-build or a pinned tool changed since it started)", "stale": 1}
        if len(fds) != 3 or not all(
            isinstance(message.get(k), t) for k, t in (("argv", list), ("env", dict), ("caller", dict))
        ):
            return {"refused": "received a malformed request"}
        caller = message["caller"]
        if caller.get("groups") != self.groups:  # files a build creates take its group
            return {"refused": "runs with other groups than this command (newgrp, sg)"}
        stack = (caller.get("rlimits") or {}).get("RLIMIT_STACK", [None])[0]
        if stack != self.stack:  # the stack's size is set when a process starts (threads' stacks too)
            return {"refused": f"was started with another stack size limit (ulimit -s: {stack}, its own {self.stack})"}
        ours = {k: v for k, v in self.env.items() if k not in self.set_by_imports}
        theirs = {k: v for k, v in import_time_env(message["env"]).items() if k not in self.set_by_imports}
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                return {"refused": f"was started with another {key} (read when torch loads)"}
        if len(self.children) >= self.max_builds:
            return {"refused": f"is busy ({len(self.children)} builds running, at most {self.max_builds})"}
        threads = native_threads()
        if threading.active_count() != 1 or threads > self.threads:
            self.stopping = True
            self._close_listener()
            # Something started threads in this process: stop, and let the caller start a new one.
            why = f"has {threads} threads where it started with {self.threads}; forking it is not safe"
            return {"refused": why, "stale": 1}
        return None

    def _build(self, conn: socket.socket, reader: Reader, message: dict) -> None:
        fds = reader.fds
        refusal = self._refusal(message, fds)
        if refusal is not None:
            send(conn, refusal)
            for fd in fds:
                os.close(fd)
            conn.close()
            return
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of this process's output may reach the caller
        read_end, write_end = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            child.run(self, conn, fds, message, write_end, parent)  # never returns
        os.close(write_end)
        with contextlib.suppress(OSError):
            os.setpgid(pid, pid)  # also here, so that the group exists before the caller signals it
        for fd in fds:
            os.close(fd)
        refused = self._child_report(pid, read_end)
        if refused is not None:
            with contextlib.suppress(OSError):
                send(conn, {"refused": refused})
            conn.close()
            return
        self.builds += 1
        self.children[pid] = conn
        try:
            send(conn, {"pid": pid})
        except OSError:
            pass  # the caller is gone already; the selector sees it
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)

    def _child_report(self, pid: int, read_end: int) -> str | None:
        """Waits for the new child to say it has taken the caller's process attributes; None
        if it has, else why not (the child has ended: the caller builds in its own process)."""
        with os.fdopen(read_end, "rb") as pipe:
            ready = selectors.DefaultSelector()
            ready.register(pipe, selectors.EVENT_READ)
            said = pipe.read1(4096) if ready.select(REPORT_WAIT) else b""
            ready.close()
        if said == child.OK:
            return None
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        log.info("a build's child could not start: %s", said.decode(errors="replace") or "no report")
        return said.decode(errors="replace") or "could not start a build"

    def _caller_gone(self, pid: int) -> None:
        conn = self.children.get(pid)
        if conn is None:
            return
        try:
            if conn.recv(1):
                return  # a caller has nothing more to send; ignore stray bytes
        except BlockingIOError:
            return
        except OSError:
            pass
        # Its connection ends only when the caller's process has ended without passing a signal
        # on (client.py passes SIGHUP and the others): killed, as a build in that process would
        # have been. SIGKILL also ends a group the caller had stopped (Ctrl-Z).
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        self.selector.unregister(conn)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            result = (
                {"signal": os.WTERMSIG(status)}
                if os.WIFSIGNALED(status)
                else {"exit": os.waitstatus_to_exitcode(status)}
            )
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            try:
                conn.setblocking(True)
                send(conn, result)
            except OSError:
                pass
            conn.close()


def _idle(text: str) -> float:
    try:
        return idle_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ethosu_build.warm.service")
    parser.add_argument("--idle", type=_idle, default=IDLE_SECONDS, help="stop after this many idle seconds")
    parser.add_argument("--max-builds", type=int, default=MAX_BUILDS)
    args = parser.parse_args(argv)
    # The service's own log only: the root logger stays as a fresh interpreter has it, since
    # each build's child inherits it.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        where = paths(create=True)
    except WarmUnavailable as exc:
        log.error("cannot start: %s", exc)
        return EXIT_BUILD_FAILED
    lock_fd = os.open(where.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    # One service per install. A service that was told to stop (its code is older) lets go of
    # the lock once its running builds end, so wait for it a little.
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                log.info("a service for this install runs already")
                return EXIT_OK
            time.sleep(0.2)
    env = import_time_env(os.environ)
    stack = resource.getrlimit(resource.RLIMIT_STACK)[0]  # as this process started
    code = fingerprint()  # before the imports: what a client computes from the files
    t0 = time.monotonic()
    failed = preload()
    # Variables the imports set themselves (scikit-learn sets KMP_DUPLICATE_LIB_OK): a caller
    # that imported those libraries has them too, and a build sets them as it imports.
    after = import_time_env(os.environ)
    set_by_imports = frozenset(k for k in set(env) | set(after) if env.get(k) != after.get(k))
    threads = native_threads()
    log.info("imported in %.1f s (%d threads; not preloaded: %s)", time.monotonic() - t0, threads, failed or "none")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(where.socket)  # we hold the lock: a socket there is a dead service's
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)
    try:
        listener.bind(str(where.socket))
    finally:
        os.umask(umask)
    os.chmod(where.socket, 0o600)
    listener.listen(64)
    service = Service(
        listener,
        where,
        code,
        args.idle,
        args.max_builds,
        threads,
        env,
        set_by_imports,
        inode=os.stat(where.socket).st_ino,
        lock_fd=lock_fd,
        stack=stack,
    )
    log.info("ready: %s", where.socket)
    try:
        service.run()
    finally:  # a service that fails leaves no socket behind: callers then build without a word
        service._close_listener()
    log.info("stopped after %d builds", service.builds)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
