"""`ethosu-artifacts`: list, inspect, check, verify and copy artifacts (docs/artifacts.md).

    ethosu-artifacts [--root outputs] ls [NAME] [--target T] [--scheme S] [--check] [--json]
    ethosu-artifacts [--root outputs] show ID|PATH [--json]
    ethosu-artifacts [--root outputs] diff A B               # A, B: IDs, or folders of other stores / exports
    ethosu-artifacts [--root outputs] verify ID|PATH         # rebuild and compare model.pte
    ethosu-artifacts [--root outputs] verify [ID] --recipe RECIPE [--searchpath DIR]
    ethosu-artifacts [--root outputs] export ID DIR [--firmware] [--force]  # copy (and C headers) for firmware
    ethosu-artifacts [--root outputs] gc [--dry-run] [--artifact ID ...]
    ethosu-artifacts lock RECIPE [--searchpath DIR]           # write RECIPE.lock.json beside it
    ethosu-artifacts summarize SWEEP_DIR [--json]             # summary.csv/.md, pareto.png
    ethosu-artifacts [--root outputs] track ID... [--uri URI] [--experiment NAME] [--no-model]  # MLflow runs

One module per command (its `COMMAND`: help, examples, arguments, `run`), registered in
`COMMANDS` below; common.py holds what several share. Each command parses its arguments,
delegates to store/ or pipeline/ and prints. Errors go through errors.report, as in
ethosu-build. Everything but `verify` and `lock` reads files only: no torch import (the
heavy imports are inside each `run`). Every command that prints, copies or rebuilds from an
artifact asks `store.artifacts.check` first (`common._checked`): the one rule of trust
(docs/trust.md).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from .. import numerics, run_dirs
from ..errors import IO_ERRNOS, ConfigError, ConfigIssue, UsageError, io_failure, report
from ..store.artifacts import ArtifactStore
from ..store.trust import store_key
from . import diff, export, gc, layers, lock, ls, show, summarize, track, verify
from .common import Command

PROG = "ethosu-artifacts"
numerics.pin()  # verify builds: on the same kernels as every build (numerics.py)

# The commands, in the order --help lists them: a new command is its module and a line here.
COMMANDS: tuple[Command, ...] = (
    ls.COMMAND,
    show.COMMAND,
    diff.COMMAND,
    layers.COMMAND,
    verify.COMMAND,
    lock.COMMAND,
    export.COMMAND,
    gc.COMMAND,
    summarize.COMMAND,
    track.COMMAND,
)
_BY_NAME = {c.name: c for c in COMMANDS}

_EXIT = (
    "exit codes: 0 all well; 1 damage or an untrusted version found (ls --check), DIFFERS (verify), other bytes "
    "(diff), a shown artifact your key did not sign (show); 2 a bad argument, or an artifact too damaged or untrusted "
    "to act on; 130 interrupted; 141 the output's reader stopped (| head)"
)
# Each command's examples, which its own --help ends with.
_EXAMPLES = {c.name: list(c.examples) for c in COMMANDS}


def _command(sub, c: Command) -> argparse.ArgumentParser:
    examples = "\n".join(f"  {e}" for e in _EXAMPLES[c.name])
    p = sub.add_parser(
        c.name,
        help=c.help,
        description=c.help,
        epilog=f"examples:\n{examples}\n\n{_EXIT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=c.run)
    c.arguments(p)
    return p


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description="List, inspect, check, verify and copy ethosu-build artifacts.",
        epilog=f"{_EXIT}\n\nDocs: docs/artifacts.md (the store), docs/trust.md (what the store promises). "
        "`ethosu-artifacts COMMAND --help` gives each command's arguments and examples.",
    )
    top.add_argument("--root", default="outputs", help="store root (store.root of the builds); default: outputs")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        _command(sub, c)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)  # argparse itself exits 2 naming a bad argument
    command = _BY_NAME[args.command]
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # removed under the command
        sys.exit(report(PROG, UsageError(ConfigIssue("working folder", run_dirs.GONE))))
    # As in ethosu-build: a repo's own model code imports from the folder we run in, for the
    # commands that build or compose (the others import no user code, and a store folder one
    # runs in may hold planted modules).
    if command.user_code and cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if not args.root.strip():  # an unset shell variable: never the folder one runs in
            raise UsageError(ConfigIssue("--root", "is empty; accepted: the store's folder (store.root of the builds)"))
        root = Path(args.root)
        if root.exists() and not root.is_dir():
            raise UsageError(
                ConfigIssue(
                    "--root", f"{args.root!r} is a file; accepted: the store's folder (store.root of the builds)"
                )
            )
        if command.reads_store:
            try:
                store_key(root)  # a bad key file is refused before anything is read (docs/trust.md)
            except ConfigError as exc:
                raise UsageError(exc.issues) from exc  # "bad argument ..., nothing was done"
        code = args.func(ArtifactStore(root), args)
    except OSError as exc:
        code = report(PROG, _os_error(exc, args))
    except BaseException as exc:  # noqa: BLE001 (every exit goes through the one map)
        if isinstance(exc, SystemExit):
            raise
        code = report(PROG, exc)
    sys.exit(code)


def _os_error(exc: OSError, args) -> BaseException:
    """A full disk or failing device is a failed command (exit 1); a store or folder that
    cannot be written (read-only, no permission) is the user's to fix (exit 2), named by the
    command's argument for it (`Command.writes`)."""
    if exc.errno in IO_ERRNOS:
        return io_failure(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = f"{exc.filename or args.root!r} cannot be read or written ({exc.strerror})"
        return UsageError(ConfigIssue(_BY_NAME[args.command].writes, f"{what}; accepted: a folder you can use"))
    return exc
