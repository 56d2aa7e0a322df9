"""Warm builds: a local service that keeps torch, ExecuTorch and ethosu-build imported, so that
a build does not wait 8-10 s for imports (docs/warm.md).

This package is what every `ethosu-build`, `ethosu-search` and `ethosu-artifacts verify`
invocation loads first (cli.py), so it imports nothing heavy: the standard library only. The
service itself is service.py.

How a build goes through the service: the client connects to a per-user Unix socket, sends its
argv, working directory and environment and passes its stdin, stdout and stderr (SCM_RIGHTS);
the service forks a child from its pre-imported process, which takes those three descriptors,
the caller's directory and environment, runs the ordinary `main()` once and exits. The service
reports the child's exit status and the client exits with it. The child writes straight to the
caller's terminal or pipes, so output, colours and exit codes are those of an in-process build;
the user's own model code is imported by the child, never by the service, so it is read fresh.

Safety: the socket lives in a directory only the user can open (0700, owned by the user, not a
symlink), is itself 0600, and the service also checks the peer's uid. One service per install
(the socket is named by the install's location); a client whose ethosu-build code or pinned
tools differ from the service's makes it stop and starts a new one. Anything unexpected (no
directory, a stale socket, a busy or refusing service) falls back to the in-process build with
one line on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# ETHOSU_BUILD_WARM: auto (default): a running service is used; off: never; on: used, and
# started in the background when none runs.
ENV_VAR = "ETHOSU_BUILD_WARM"
MODES = ("auto", "on", "off")
_MODE_ALIASES = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off", "": "auto"}

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


def mode(environ=os.environ) -> str:
    value = environ.get(ENV_VAR, "auto").strip().lower()
    value = _MODE_ALIASES.get(value, value)
    if value not in MODES:
        raise ValueError(f"{ENV_VAR}={environ.get(ENV_VAR)!r} is not accepted; accepted: auto, on (1), off (0)")
    return value


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


def paths(create: bool = False) -> Paths:
    """The per-user runtime directory, checked: a directory (not a symlink) owned by this
    user that no one else can open. `create` makes it (0700) when absent."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base or not os.path.isdir(base):
        base = tempfile.gettempdir()
    folder = Path(base) / f"ethosu-build-{os.getuid()}"
    if create:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WarmUnavailable(f"cannot create {folder}: {exc.strerror}") from exc
    try:
        st = os.lstat(folder)
    except FileNotFoundError as exc:
        raise NeverStarted(f"{folder} does not exist (no service was started)") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise WarmUnavailable(f"{folder} is not a directory (a symlink or a file); remove it")
    if st.st_uid != os.getuid():
        raise WarmUnavailable(f"{folder} belongs to uid {st.st_uid}, not to this user; remove it")
    if st.st_mode & 0o077:
        raise WarmUnavailable(f"{folder} is open to other users (mode {stat.S_IMODE(st.st_mode):o}); remove it")
    name = install_id()
    where = Paths(folder, folder / f"{name}.sock", folder / f"{name}.lock", folder / f"{name}.log")
    if len(os.fsencode(where.socket)) > 107:  # sun_path holds 108 bytes
        raise WarmUnavailable(f"the socket path {where.socket} is too long; set XDG_RUNTIME_DIR to a shorter folder")
    return where


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
