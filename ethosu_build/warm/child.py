"""A warm build's child: the process forked from the service that becomes the caller's build
(docs/warm.md, "A warm build is a build").

A process started by the caller would inherit more than its descriptors, directory and
environment: its umask, resource limits, nice value, CPUs, ignored signals. The child takes
each of those from the request before anything else, and tells the service whether it could
(one line on a pipe): a limit it cannot take (a hard limit above the service's own, which only
a privileged process may raise) makes the service refuse, and the caller builds in its own
process rather than under looser limits than it set.

The child also dies with the service (PR_SET_PDEATHSIG): a build whose service is gone has no
one to report its end to the caller, who then says the build did not finish; a build that
went on and published would contradict that. The caller ends the build's process group too
(client.py), so that sweep workers go with it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import threading

from ..errors import EXIT_BUILD_FAILED
from . import IGNORABLE, RLIMITS

OK = b"ok"  # what the child writes on the report pipe once it is the caller's
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class CannotTake(Exception):
    """An attribute of the caller's process this child cannot take; the message names it."""


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent ends (Linux; elsewhere the caller's end of the
    connection is the only watch). Checked after setting it: the parent may be gone already."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(EXIT_BUILD_FAILED)


def _forks_die_with_build() -> None:
    """The build's own forks (sweep workers, background.py's children) end with it: a sweep
    worker that outlived a killed build could publish a job's artifact after the caller was
    told the build did not finish. Only forks from the main thread: the death signal follows
    the forking thread, and another thread of the build may end while its fork runs."""
    state = {"main": True}

    def before() -> None:
        state["main"] = threading.current_thread() is threading.main_thread()

    def after_in_child() -> None:
        if state["main"]:
            die_with_parent(parent)

    parent = os.getpid()
    os.register_at_fork(before=before, after_in_child=after_in_child)


def _limit(value: int, used: float) -> int:
    """RLIMIT_CPU counts from a process's start; the caller has used `used` seconds of it."""
    if value == resource.RLIM_INFINITY:
        return value
    return max(1, value - int(used))


def take_caller_process(caller: dict) -> None:
    """Makes this process's inherited attributes the caller's (warm.caller_process())."""
    limits = caller["rlimits"]
    for name in RLIMITS:
        if name not in limits:
            continue
        soft, hard = (int(v) for v in limits[name])
        if name == "RLIMIT_CPU":
            soft, hard = _limit(soft, caller["cpu_used"]), _limit(hard, caller["cpu_used"])
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (OSError, ValueError) as exc:
            ours = resource.getrlimit(getattr(resource, name))
            why = f"cannot take this command's {name} {_pair(soft, hard)} (the service has {_pair(*ours)}: {exc})"
            raise CannotTake(why) from exc
    try:
        os.setpriority(os.PRIO_PROCESS, 0, int(caller["nice"]))
    except OSError as exc:
        raise CannotTake(f"cannot take this command's nice value {caller['nice']} ({exc.strerror})") from exc
    if caller.get("affinity") and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, caller["affinity"])
        except OSError as exc:
            raise CannotTake(f"cannot run on this command's CPUs {caller['affinity']} ({exc.strerror})") from exc
    for name in IGNORABLE:  # as a process started by the caller would have them
        sig = getattr(signal, name)
        if name in caller["ignored"]:
            signal.signal(sig, signal.SIG_IGN)
        else:
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    os.umask(int(caller["umask"]))


def _pair(soft: int, hard: int) -> str:
    def show(v: int) -> str:
        return "unlimited" if v == resource.RLIM_INFINITY else str(v)

    return f"{show(soft)}/{show(hard)} (soft/hard)"


def run(service, conn, fds: list[int], message: dict, report: int, parent: int) -> None:
    """The child's life: leave the service, take the caller's process attributes (and say so
    on `report`), become the caller's build, run it once, exit."""
    code = EXIT_BUILD_FAILED
    try:
        os.setpgid(0, 0)  # the caller forwards Ctrl-C to this group: the build and its sweep workers
        die_with_parent(parent)
        for s in (service.listener, service.wake_r, service.wake_w, conn, *service.children.values()):
            if s is not None:
                s.close()
        service.selector.close()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.close(service.lock_fd)
        logging.getLogger("ethosu_build.warm").handlers.clear()  # the service's log is not the build's
        try:
            take_caller_process(message["caller"])
        except CannotTake as exc:
            os.write(report, str(exc).encode()[:4000])
            os._exit(EXIT_BUILD_FAILED)
        os.write(report, OK)
        os.close(report)
        _become_caller(fds, message)
        _forks_die_with_build()
        _fork_sweep_workers()
        from ..entry import entry, run_as_process

        code = run_as_process(entry(str(message.get("prog"))))
    except BaseException:  # noqa: BLE001 (a failure here must still end this child)
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(code)


def _become_caller(fds: list[int], message: dict) -> None:
    """The caller's stdin, stdout, stderr, directory, environment and argv."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    # The streams keep their objects (handlers made at import hold them); stdout is
    # line-buffered on a terminal, as Python would have made it.
    sys.stdout.reconfigure(line_buffering=os.isatty(1))
    os.chdir(message["cwd"])
    os.environ.clear()
    os.environ.update(message["env"])
    from .. import numerics

    os.environ.update(numerics.ENV)  # as numerics.pin() does when a console script starts
    sys.argv = [str(a) for a in message["argv"]]
    if message.get("path0"):
        sys.path[0] = message["path0"]  # the console script's folder, as Python sets it


def _fork_sweep_workers() -> None:
    """A sweep with the joblib launcher: its loky workers are forks of this build process, which
    has everything imported, instead of new interpreters importing torch again.

    loky forks its workers before it starts its own threads, but with the fork start method it
    drops the environment it gives a new worker (thread limits: cpu_count // n_jobs for OpenMP,
    MKL, ...), which a worker's torch would read when it loads. So the environment joblib
    prepares is remembered here and applied in each forked worker, torch's thread count
    included, as a spawned worker would have it. loky's warning about fork in general is not
    news to the user of a build, so that one warning is silenced."""
    import warnings

    from joblib._parallel_backends import LokyBackend
    from joblib.externals.loky.backend import context

    context.set_start_method("fork", force=True)
    warnings.filterwarnings("ignore", message="`fork` start method should not be used", category=UserWarning)
    worker_env: dict[str, str] = {}
    prepare = LokyBackend._prepare_worker_env

    def remember(self, n_jobs):
        worker_env.clear()
        worker_env.update(prepare(self, n_jobs))
        return dict(worker_env)

    def apply() -> None:
        os.environ.update(worker_env)
        if worker_env.get("OMP_NUM_THREADS", "").isdigit():
            import torch

            torch.set_num_threads(int(worker_env["OMP_NUM_THREADS"]))

    LokyBackend._prepare_worker_env = remember
    os.register_at_fork(after_in_child=apply)
