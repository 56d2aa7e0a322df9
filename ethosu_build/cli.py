"""The console scripts `ethosu-build` and `ethosu-search`: a command goes to the warm build
service when one runs for this install (warm/, docs/warm.md), else it runs in this process
(app.py). Nothing heavy is imported before that choice, so a warm build starts in
milliseconds."""

from __future__ import annotations

import sys


def _run(prog: str) -> None:
    from .warm import client

    argv = sys.argv[1:]
    if prog == "ethosu-build" and argv[:1] == ["--warm"]:
        sys.exit(client.command(prog, argv[1:]))
    try:
        code = client.build(prog, sys.argv)
    except ValueError as exc:  # ETHOSU_BUILD_WARM has a value that is not accepted
        print(f"{prog}: {exc}", file=sys.stderr)
        sys.exit(2)
    if code is not None:
        sys.exit(code)
    from . import app

    (app.search_main if prog == "ethosu-search" else app.main)()


def build_main() -> None:
    _run("ethosu-build")


def search_main() -> None:
    _run("ethosu-search")
