"""What a console script runs, and how it ends: shared by the process a command starts in
(cli.py) and a warm build's child (warm/child.py), so that neither imports the other.
Imports nothing heavy: the app is imported when `entry()` is called."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading


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
    from .errors import EXIT_BUILD_FAILED, EXIT_OK  # here: cli.py imports this module on a warm build's path

    interrupted = False
    try:
        entry()
        code = EXIT_OK
    except SystemExit as exc:
        code = exc.code
        if code is None:
            code = EXIT_OK
        elif not isinstance(code, int):  # Python prints it and exits 1
            print(code, file=sys.stderr)
            code = EXIT_BUILD_FAILED
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code, interrupted = EXIT_BUILD_FAILED, True
    except BaseException:  # noqa: BLE001
        sys.excepthook(*sys.exc_info())
        code = EXIT_BUILD_FAILED
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
