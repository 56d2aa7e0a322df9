"""What several commands of `ethosu-artifacts` share: the shape of a command (`Command`), the
one rule of trust before acting on an artifact (`_checked`, `_changed_after_check`), the
printers (`_console`, `_print_markdown`) and the recipe a build command composes (`_recipe`).

Rich and Hydra are imported inside the functions that use them: `ls` loads only what it prints with.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigIssue, UsageError
from ..store.artifacts import Artifact, ArtifactStore, Check, DamagedManifest, NotAnArtifact, check

ID_HELP = "an artifact: NAME/vN, NAME (its newest version) or a version folder of the store"


@dataclass(frozen=True)
class Command:
    """A subcommand: its parser (`arguments` adds its arguments) and `run`, which parses what
    argparse cannot, delegates to store/ or pipeline/, prints and returns the exit code."""

    name: str
    help: str
    examples: tuple[str, ...]  # the end of its --help
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[ArtifactStore, argparse.Namespace], int]
    reads_store: bool = True  # False: no store key is checked before it runs (summarize, lock)
    user_code: bool = False  # builds or composes: the working folder's modules import (verify, lock)
    writes: str = "--root"  # the argument a folder that cannot be written is blamed on


def _resolve(store: ArtifactStore, ref: str, arg: str, foreign: bool = False) -> Artifact:
    """An artifact of this store; with `foreign`, also a folder of another store or an export."""
    try:
        return store.resolve(ref)
    except NotAnArtifact as exc:
        if foreign and ref and os.path.isdir(ref) and not os.path.islink(ref):
            try:
                return store.foreign(ref)
            except NotAnArtifact as why:
                raise UsageError(ConfigIssue(arg, str(why))) from why
        raise UsageError(ConfigIssue(arg, str(exc))) from exc


@contextlib.contextmanager
def _changed_after_check(a: Artifact, arg: str):
    """A file that no longer matches the checked manifest when it is read (swapped after the
    check) refuses the command as damage would: nothing unchecked is printed or copied."""
    try:
        yield
    except DamagedManifest as exc:
        name = a.id if a is not None else "the artifact"
        raise UsageError(ConfigIssue(arg, f"{name} changed while it was read: {exc}")) from exc


def _checked(a: Artifact, arg: str, doing: str, signed_elsewhere: bool = False) -> Check:
    """The trust check before `doing` anything with `a`: refused (exit 2, naming what failed)
    unless trusted; with `signed_elsewhere`, files that match their own manifest are enough
    (the caller then says the artifact was not signed here)."""
    checked = check(a)
    if checked.trusted or (signed_elsewhere and not checked.problems):
        return checked
    if a.foreign and all(p.endswith(("missing", "(a symlink, or missing)")) for p in checked.problems):
        raise UsageError(
            ConfigIssue(
                arg,
                f"{a.id} lacks files its manifest lists ({checked.why}): an export made before `export` copied "
                "whole versions; accepted: a whole version: export it again from its store",
            )
        )
    raise UsageError(
        ConfigIssue(
            arg,
            f"not {doing} {a.id}: it is not trusted ({checked.why}); accepted: an artifact signed by your key "
            "with its files as its manifest lists them (docs/trust.md; `ethosu-artifacts ls --check` lists them all)",
        )
    )


def _console():
    """Rich's console for tables: in a terminal, its width; elsewhere (a CI log, a pipe, a
    file) COLUMNS if set, else as wide as the table needs, so no column is ever cut to a few
    characters. A reader that stops reading (`| head`) ends the command as a pipe would."""
    from rich.console import Console

    class _Out(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    if sys.stdout is None:  # started with stdout closed (`>&-`): no reader, as a closed pipe
        raise BrokenPipeError
    if sys.stdout.isatty():
        return _Out()
    columns = os.environ.get("COLUMNS", "")
    return _Out(width=int(columns) if columns.isdigit() and int(columns) > 0 else 10_000)


def _print_markdown(text: str) -> None:
    """A report or summary: rendered in a terminal; elsewhere the markdown itself, which
    reads as plain text in a log or a file (rendered there, tables would be cut or padded)."""
    if sys.stdout is None:
        raise BrokenPipeError
    if not sys.stdout.isatty():
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    from rich.markdown import Markdown

    _console().print(Markdown(text))


def _quiet_imports() -> None:
    """verify, diff and export --firmware import torch/executorch, whose import-time warnings
    (torchao's CUDA kernels that do not load, torch's deprecations) say nothing about them."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _recipe(args) -> tuple[dict[str, Any], Any, Path]:
    """The recipe's composed config as `ethosu-build recipe=NAME` would build it, validated,
    and its file."""
    from ..config.compose import compose
    from ..config.validate import validate
    from ..store.provenance import recipe_file

    container, _, sources = compose([f"recipe={args.recipe}"], args.searchpath)
    path = recipe_file(args.recipe, sources)
    if path is None:  # compose found it: this only happens for a recipe outside a recipe/ folder
        raise UsageError(
            ConfigIssue("RECIPE", f"{args.recipe!r} has no file under a recipe/ folder of the search path")
        )
    return container, validate(container, default_name=args.recipe), path


def _searchpath_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--searchpath", metavar="DIR", help="a folder with your own config groups (as hydra.searchpath)")
