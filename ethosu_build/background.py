"""Work a build hands to a forked child, so that it runs on the machine's other core while the
build goes on: storing an exported program in the stage cache (pipeline/stage.py), and the
float-vs-quantized comparison and the TOSA check while the lowering runs (pipeline/evaluate.py).

Why fork: the child starts in milliseconds with the build's objects (programs, model,
samples) as a copy-on-write image, where a new interpreter would import torch for seconds
and need them serialized. Threads would not help: both jobs are mostly GIL-bound Python.

Fork only where it is safe and pays (`possible()`): a POSIX system, no Python thread besides
the main one (a thread could hold a lock the child needs; torch's own native threads hold
none a child takes: numeric code runs single-threaded here, numerics.py, as in PyTorch's own
forked DataLoader workers), and a core with nothing runnable waiting for it. On a machine
whose cores are all busy (a sweep with a worker per core, the test suite) a child would only
take turns with its parent and cost the copies of the pages the parent then writes (Python's
reference counts touch most of them): a saturated 12-job sweep that forked always took 63-65 s
here against 56-62 s in place (noisy runs). Otherwise the caller does the work in place.
ETHOSU_BUILD_BACKGROUND overrides the last condition: `on` forks whenever it is safe, `off`
never forks; `auto` is the default.

A child reports one JSON value (or its error) through a pipe and ends with os._exit, so it
runs none of the parent's exit code and writes none of its buffers.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import EXIT_BUILD_FAILED, EXIT_OK, BuildError, first_line
from .switches import Switch, switch

log = logging.getLogger("ethosu_build.build")


ENV_VAR = "ETHOSU_BUILD_BACKGROUND"


def mode() -> Switch:
    """ETHOSU_BUILD_BACKGROUND: auto, on or off; a ConfigError (exit 2) naming it for anything else."""
    return switch(ENV_VAR)


def possible() -> bool:
    """Whether to hand work to a child now (see the module's docstring)."""
    return workers() > 1


def workers() -> int:
    """How many processes may share work now, this one included: 1 means do it in place.
    `auto`: this process's core and each core no other process's task wants (`_spare_cores`);
    `on`: every core, and at least 2."""
    chosen = mode()
    if chosen == "off" or not hasattr(os, "fork") or threading.active_count() != 1:
        return 1
    if chosen == "on":
        return max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
    return _spare_cores()


def _spare_cores() -> int:
    """This process's core and each core that no other process's runnable task wants: Linux's
    instantaneous count of runnable tasks (/proc/loadavg), less this process and its own
    running children (which share this process's core). The least of five readings 2 ms
    apart: with one reading, a task runnable for a moment (likely a kernel thread writing back
    what a child just stored) kept the comparison on a cold build's critical path in 2 of 3
    builds here (docs/warm.md). Where the count cannot be read, assume one core is spare."""
    try:
        cores = len(os.sched_getaffinity(0))
        readings = []
        for i in range(5):
            if i:
                time.sleep(0.002)
            readings.append(_runnable())
    except (OSError, AttributeError, ValueError, IndexError):
        return 2
    ours = 1 + sum(1 for child in list(_running) if child.running())
    return max(1, cores - max(0, min(readings) - ours))


def encode_arrays(arrays) -> list[str]:
    """numpy arrays (or tensors) as JSON values, for a child's report: base64 of their .npy
    bytes, exact."""
    import io

    import numpy as np

    out = []
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, np.asarray(a), allow_pickle=False)
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def decode_arrays(encoded: list[str]) -> list:
    import io

    import numpy as np

    return [np.load(io.BytesIO(base64.b64decode(e)), allow_pickle=False) for e in encoded]


def _runnable() -> int:
    """The machine's runnable tasks now, this process included."""
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


class ChildFailed(Exception):
    """What a child raised, as text (its type and first line), with errno and filename if
    it was an OSError."""

    def __init__(self, what: str, report: dict[str, Any]):
        super().__init__(f"{what}: {report['error']}")
        self.report = report

    def reraise(self) -> None:
        """Raise it as the same work in place would have: an OSError stays one (a full disk
        reads as one), anything else is a BuildError."""
        r = self.report
        if r.get("errno"):
            raise OSError(r["errno"], r["error"], r.get("filename")) from self
        raise BuildError(str(self)) from self


class Child:
    """`fn()` in a forked child; `result()` returns its JSON value or raises ChildFailed."""

    def __init__(self, what: str, fn: Callable[[], Any], close_fds: Iterable[int] = ()):
        self.what = what
        _flush()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            _child(fn, read_end, write_end, close_fds)
        os.close(write_end)
        self.pid, self._pipe, self._done, self._status = pid, read_end, False, None
        _running.add(self)
        log.debug("%s: in child process %d", what, pid)

    def running(self) -> bool:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = status
                _running.discard(self)
        return self._status is None

    def result(self) -> Any:
        if self._done:
            raise RuntimeError(f"{self.what}: result() was already taken")
        self._done = True
        with os.fdopen(self._pipe, "rb") as pipe:
            said = pipe.read()  # before waitpid: a report larger than the pipe's buffer must not block the child
        if self._status is None:
            self._status = os.waitpid(self.pid, 0)[1]
            _running.discard(self)
        status = self._status
        report = json.loads(said) if said else None
        if status == 0 and report is not None and "result" in report:
            return report["result"]
        if report is None or "error" not in report:
            report = {"error": f"the process ended without a result (wait status {status:#x})"}
        log.debug("%s: %s", self.what, report["error"])
        raise ChildFailed(self.what, report)

    def reap(self) -> None:
        """Wait for the child and drop its outcome (the build already failed)."""
        if not self._done:
            with contextlib.suppress(ChildFailed):
                self.result()


_running: set[Child] = set()  # children not yet known to have ended


def _child(fn: Callable[[], Any], read_end: int, write_end: int, close_fds: Iterable[int]) -> None:
    code = EXIT_OK
    try:
        os.close(read_end)
        for fd in close_fds:
            os.close(fd)
        report: dict[str, Any] = {"result": fn()}
    except BaseException as exc:  # noqa: BLE001 (reported to the parent, which decides)
        code = EXIT_BUILD_FAILED
        report = {
            "error": f"{type(exc).__name__}: {first_line(exc)}",
            "errno": getattr(exc, "errno", None),
            "filename": str(exc.filename) if getattr(exc, "filename", None) else None,
        }
    try:
        data = json.dumps(report).encode()
        while data:
            data = data[os.write(write_end, data) :]
    finally:
        os._exit(code)


def _flush() -> None:
    """Flush what this process buffered, so that the child does not write it again."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
