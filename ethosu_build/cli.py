"""The console scripts. `ethosu-build`, `ethosu-search` and `ethosu-artifacts verify` (which
rebuilds): a command goes to the warm build service when one runs for this install (warm/,
docs/warm.md), else it runs in this process (app.py, artifacts_cli/). Nothing heavy is
imported before that choice, so a warm build starts in milliseconds. The other
`ethosu-artifacts` commands import little and always run in this process.

A command run in this process ends with `os._exit` once it has done what the interpreter does
at exit (run_as_process): tearing down torch's and ExecuTorch's modules took about 2 s after
a build here, when everything the build wrote is closed and nothing is left to do."""

from __future__ import annotations

import os
import sys

from .entry import entry, run_as_process


def _run(prog: str) -> None:
    from .warm import client

    argv = sys.argv[1:]
    if prog == "ethosu-build" and argv[:1] == ["--warm"]:
        sys.exit(client.command(prog, argv[1:]))
    try:
        code = client.build(prog, sys.argv)
    except Exception as exc:
        # ETHOSU_BUILD_WARM has a value that is not accepted (switches.py). errors.py is
        # imported only now: a warm build's path never pays its imports.
        from .errors import ConfigError, report

        if not isinstance(exc, ConfigError):
            raise
        sys.exit(report(prog, exc))
    if code is not None:
        sys.exit(code)
    os._exit(run_as_process(entry(prog)))


def build_main() -> None:
    _run("ethosu-build")


def search_main() -> None:
    _run("ethosu-search")


def artifacts_main() -> None:
    if "verify" in sys.argv[1:]:  # the command that builds; anything else named so only takes the same path
        _run("ethosu-artifacts")
    os._exit(run_as_process(entry("ethosu-artifacts")))
