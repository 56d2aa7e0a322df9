"""Warm builds: a local service that keeps torch, ExecuTorch and ethosu-build imported, so that
a build does not wait 8-10 s for imports (docs/warm.md).

This package is what every `ethosu-build`, `ethosu-search` and `ethosu-artifacts verify`
invocation loads first (cli.py), so it imports nothing heavy: the standard library only (and
switches.py, which is too). The service itself is service.py.

How a build goes through the service: the client connects to a per-user Unix socket, sends its
argv, working directory, environment and process attributes (umask, resource limits, nice
value, CPUs, ignored signals: caller_process()) and passes its stdin, stdout and stderr
(SCM_RIGHTS); the service forks a child from its pre-imported process, which takes all of
these (child.py), runs the ordinary `main()` once and exits. The service
reports the child's exit status and the client exits with it. The child writes straight to the
caller's terminal or pipes, so output, colours and exit codes are those of an in-process build;
the user's own model code is imported by the child, never by the service, so it is read fresh.

Safety: the socket lives in a directory only the user can create and open (0700, owned by the
user, not a symlink; never under a shared folder such as /tmp), is itself 0600, and the service
also checks the peer's uid. One service per install
(the socket is named by the install's location); a client whose ethosu-build code or pinned
tools differ from the service's makes it stop and starts a new one. Anything unexpected (no
directory, a stale socket, a busy or refusing service) falls back to the in-process build with
one line on stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import signal
import socket
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..switches import Switch, switch

# ETHOSU_BUILD_WARM: auto (default): a running service is used; off: never; on: used, and
# started in the background when none runs (its spellings: switches.py).
ENV_VAR = "ETHOSU_BUILD_WARM"

# What the service's fingerprint covers besides ethosu-build's own Python files: the tools
# whose code it holds imported (a different version of one would make its builds differ).
PINNED = ("torch", "torchao", "executorch", "ethos-u-vela", "tosa-tools", "hydra-core", "omegaconf", "numpy")

# Variables read when torch, ExecuTorch or Python start: a child forked from the service
# cannot take a different value from its caller, so a caller whose values differ builds in
# its own process. (The numeric platform's variables are not compared: every build pins them,
# numerics.py.)
IMPORT_TIME_PREFIXES = ("PYTHON", "LD_", "OMP_", "KMP_", "MKL_", "GOMP_", "OPENBLAS_", "TORCH", "PYTORCH", "DNNL_")
IMPORT_TIME_NAMES = ("LANG", "LC_ALL", "LC_CTYPE", "VIRTUAL_ENV", "ONEDNN_VERBOSE")
NUMERIC_PLATFORM = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")

MAX_MESSAGE = 1 << 22  # a request (argv + environment) larger than 4 MiB is refused


class WarmUnavailable(Exception):
    """The service cannot be used; the message is the one line the user sees."""


class NeverStarted(WarmUnavailable):
    """No runtime folder: no service was ever started for this user (nothing to say)."""


def mode(environ: Mapping[str, str] = os.environ) -> Switch:
    """ETHOSU_BUILD_WARM: auto, on or off; a ConfigError (exit 2) naming it for anything else."""
    return switch(ENV_VAR, environ)


@dataclass(frozen=True)
class Paths:
    dir: Path
    socket: Path
    lock: Path
    log: Path


def install_id() -> str:
    """One service per installed ethosu-build: the interpreter's prefix and the package's
    location (two virtual environments, or two checkouts, get two services)."""
    here = Path(__file__).resolve().parent.parent
    return hashlib.sha256(f"{sys.prefix}\0{here}".encode()).hexdigest()[:16]


def runtime_folder() -> Path:
    """Where the socket lives: `$XDG_RUNTIME_DIR/ethosu-build-<uid>` when XDG_RUNTIME_DIR is a
    folder of this user's that no one else can write, else
    `${XDG_CACHE_HOME:-~/.cache}/ethosu-build/run-<host>`. Never a shared folder such as /tmp:
    another user could create the name first there and so disable the service (the checks in
    paths() refuse a folder that is not ours). The host is in the name since a home folder may
    be shared by several machines, each with its own services."""
    uid = os.getuid()
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(base):
        with contextlib.suppress(OSError):
            st = os.stat(base)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o022:
                return Path(base) / f"ethosu-build-{uid}"
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # the XDG specification: a relative value is ignored
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in socket.gethostname())[:64] or "host"
    return Path(cache) / "ethosu-build" / f"run-{host}"


def _not_yours(folder: Path, why: str) -> str:
    """What the user can do about a runtime folder that fails the checks: another user's
    folder cannot be removed by them, so the way out is another folder."""
    return (
        f"{folder} {why}, so the warm build service cannot use it; remove it (as its owner, or with sudo), "
        "or set XDG_RUNTIME_DIR to a folder of yours that only you can write"
    )


def paths(create: bool = False) -> Paths:
    """The per-user runtime directory, checked: a directory (not a symlink) owned by this
    user that no one else can open. `create` makes it (0700) when absent."""
    folder = runtime_folder()
    if create:
        try:
            folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WarmUnavailable(f"cannot create {folder}: {exc.strerror}") from exc
    try:
        st = os.lstat(folder)
    except FileNotFoundError as exc:
        raise NeverStarted(f"{folder} does not exist (no service was started)") from exc
    if st.st_uid != os.getuid():
        raise WarmUnavailable(_not_yours(folder, f"belongs to uid {st.st_uid}{_user(st.st_uid)}, not to you"))
    if not stat.S_ISDIR(st.st_mode):
        raise WarmUnavailable(_not_yours(folder, "is not a directory (a symlink or a file)"))
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise WarmUnavailable(f"{folder} is open to other users (mode {mode:o}); `chmod 700` or remove it")
    name = install_id()
    where = Paths(folder, folder / f"{name}.sock", folder / f"{name}.lock", folder / f"{name}.log")
    if len(os.fsencode(where.socket)) > 107:  # sun_path holds 108 bytes
        raise WarmUnavailable(f"the socket path {where.socket} is too long; set XDG_RUNTIME_DIR to a shorter folder")
    return where


def _user(uid: int) -> str:
    try:
        import pwd

        return f" ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return ""


# `--warm start --idle SECONDS`: the service's idle timer takes any finite number; a year is
# more than any session needs, and a bound keeps `inf`, `nan` and typos out.
MAX_IDLE = 365 * 24 * 3600.0


def idle_seconds(text: str) -> float:
    """The idle timeout `--idle` accepts, or ValueError with the one line the user reads."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_IDLE:  # also false for nan
        raise ValueError(
            f"--idle: {text!r} is not accepted; accepted: a number of seconds greater than 0 "
            f"and at most {MAX_IDLE:.0f} (365 days)"
        )
    return value


def fingerprint() -> str:
    """ethosu-build's Python files (path, size, mtime) and the pinned tools' versions: what
    the service holds imported. A change to either restarts the service."""
    import importlib.metadata  # 35 ms: only a call that found a service pays it

    h = hashlib.sha256(f"{sys.version}\0{sys.prefix}".encode())
    here = Path(__file__).resolve().parent.parent
    for root in (here, here.parent / "hydra_plugins" / "ethosu_build_sweeper"):
        for path in sorted(root.rglob("*.py")):
            st = path.stat()
            h.update(f"{path.relative_to(root.parent)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for dist in PINNED:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{dist}=={version}\n".encode())
    return h.hexdigest()[:16]


def import_time_env(environ) -> dict[str, str]:
    return {
        k: v
        for k, v in environ.items()
        if (k.startswith(IMPORT_TIME_PREFIXES) or k in IMPORT_TIME_NAMES) and k not in NUMERIC_PLATFORM
    }


# What a process inherits from its parent besides its environment and descriptors, and what a
# build forked from the service must therefore take from its caller instead (docs/warm.md):
# every resource limit (`ulimit`), the umask, the nice value, the CPUs it may run on, the
# signals it ignores (`nohup`), its groups.
RLIMITS = tuple(name for name in dir(resource) if name.startswith("RLIMIT_") and name != "RLIMIT_OFILE")  # = NOFILE
# Signals whose disposition a caller may have set to "ignore" (nohup, `&` in a script).
IGNORABLE = ("SIGHUP", "SIGINT", "SIGQUIT", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGTSTP", "SIGTTIN", "SIGTTOU")


def caller_process() -> dict:
    """This process's inherited attributes, for the build's child to take (child.py)."""
    umask = os.umask(0o077)  # reading the umask sets it: put it back at once (one thread here)
    os.umask(umask)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "umask": umask,
        "rlimits": {name: list(resource.getrlimit(getattr(resource, name))) for name in RLIMITS},
        "cpu_used": usage.ru_utime + usage.ru_stime,  # RLIMIT_CPU counts from this process's start
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ignored": [name for name in IGNORABLE if signal.getsignal(getattr(signal, name)) == signal.SIG_IGN],
        "groups": [os.getgid(), os.getegid(), *sorted(os.getgroups())],
    }


# The wire format: one JSON object per line, both ways; the request carries the caller's
# stdin, stdout and stderr as SCM_RIGHTS on its first byte.


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = (json.dumps(message) + "\n").encode()
    if fds:
        socket.send_fds(sock, [data[:1]], fds)
        data = data[1:]
    sock.sendall(data)


class Reader:
    """Reads newline-terminated JSON messages (and the descriptors that came with them)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer, self.fds = sock, b"", []

    def read(self) -> dict | None:
        """The next message, or None at the end of the stream."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_MESSAGE:
                raise ValueError("message too large")
            data, fds, _flags, _addr = socket.recv_fds(self.sock, 65536, 3)
            self.fds.extend(fds)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        return message
