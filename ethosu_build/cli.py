"""The console scripts. `ethosu-build`, `ethosu-search` and `ethosu-artifacts verify` (which
rebuilds): a command goes to the warm build service when one runs for this install (warm/,
docs/warm.md), else it runs in this process (app.py, artifacts_cli.py). Nothing heavy is
imported before that choice, so a warm build starts in milliseconds. The other
`ethosu-artifacts` commands import little and always run in this process.

A command run in this process ends with `os._exit` once it has done what the interpreter does
at exit (run_as_process): tearing down torch's and ExecuTorch's modules took about 2 s after
a build here, when everything the build wrote is closed and nothing is left to do."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


def _run(prog: str) -> None:
    from .warm import client

    argv = sys.argv[1:]
    if prog == "ethosu-build" and argv[:1] == ["--warm"]:
        sys.exit(client.command(prog, argv[1:]))
    try:
        code = client.build(prog, sys.argv)
    except ValueError as exc:  # ETHOSU_BUILD_WARM has a value that is not accepted
        from .config.errors import EXIT_CONFIG_ERROR

        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG_ERROR)
    if code is not None:
        sys.exit(code)
    os._exit(run_as_process(entry(prog)))


def entry(prog: str):
    """What a console script runs, in its own process or in a warm build's child."""
    if prog == "ethosu-artifacts":
        from . import artifacts_cli

        return artifacts_cli.main
    from . import app

    return app.search_main if prog == "ethosu-search" else app.main


def run_as_process(entry) -> int:
    """`entry()` and then what the interpreter does at exit, short of tearing down its modules:
    the exit code from SystemExit as Python computes it, a traceback for an uncaught
    exception, non-daemon threads joined, atexit handlers (logging, temporary folders, sweep
    workers), streams flushed. The caller ends the process with os._exit(code); a warm
    build's child does too (warm/service.py)."""
    interrupted = False
    try:
        entry()
        code = 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            code = 0
        elif not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code, interrupted = 1, True
    except BaseException:  # noqa: BLE001
        sys.excepthook(*sys.exc_info())
        code = 1
    with contextlib.suppress(BaseException):
        threading._shutdown()  # what Py_Finalize does first: wait for non-daemon threads
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if interrupted:  # Python ends an uncaught KeyboardInterrupt by SIGINT, so the caller sees it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code & 0xFF


def build_main() -> None:
    _run("ethosu-build")


def search_main() -> None:
    _run("ethosu-search")


def artifacts_main() -> None:
    if "verify" in sys.argv[1:]:  # the command that builds; anything else named so only takes the same path
        _run("ethosu-artifacts")
    os._exit(run_as_process(entry("ethosu-artifacts")))
