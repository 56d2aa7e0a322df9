"""`ethosu-artifacts verify`: rebuild a trusted artifact's own config, or a recipe of yours, in
a temporary store and compare model.pte byte for byte (pipeline/verify.py). Builds: torch
and Hydra are imported inside `run`."""

from __future__ import annotations

from ..errors import EXIT_NOT_ALL_WELL, EXIT_OK, ConfigIssue, UsageError
from ..store.artifacts import ArtifactStore, check
from .common import (
    ID_HELP,
    Command,
    _changed_after_check,
    _checked,
    _quiet_imports,
    _recipe,
    _resolve,
    _searchpath_argument,
)
from .diff import _print_diff


def run(store: ArtifactStore, args) -> int:
    from ..pipeline import verify

    _quiet_imports()
    if args.recipe:
        # The explicit way to check an artifact this key did not sign: rebuilt from a recipe
        # the user names, never from the store's copy of a config.
        stored = None
        if args.id:
            stored = _resolve(store, args.id, "ID")
            if "model.pte" not in _checked(stored, "ID", "verifying", signed_elsewhere=True).manifest["files"]:
                raise UsageError(ConfigIssue("ID", f"{stored.id} lists no model.pte to compare a rebuild with"))
        container, cfg, path = _recipe(args)
        with _changed_after_check(stored, "ID"):
            verdict = verify.rebuild_recipe(args.recipe, container, cfg.name, path, store, stored)
    elif args.id:
        a = _resolve(store, args.id, "ID")
        checked = check(a)
        if not checked.trusted:  # its config.yaml names code to run: only a trusted one is built
            raise UsageError(
                ConfigIssue(
                    "ID",
                    f"not rebuilding {a.id} from its config.yaml: it is not trusted ({checked.why}), and a rebuild "
                    f"runs the code its config names; accepted: an artifact signed by your key, or "
                    f"`ethosu-artifacts verify {a.id} --recipe NAME` to rebuild from a recipe of yours (docs/trust.md)",
                )
            )
        with _changed_after_check(a, "ID"):
            verdict = verify.rebuild(a)
    else:
        raise UsageError(ConfigIssue("ID", "missing; accepted: an artifact ID or PATH, or --recipe NAME"))
    if verdict.match:
        print(f"MATCH: {verdict.subject} rebuilds {verdict.stored.id} (sha256 {verdict.stored_sha256})")
        for note in verdict.notes:
            print(f"  note: {note}")
        return EXIT_OK
    if verdict.built_sha256:
        print(
            f"DIFFERS: {verdict.subject} builds sha256 {verdict.built_sha256}, {verdict.stored.id} holds "
            f"{verdict.stored_sha256}"
        )
    else:
        print(f"DIFFERS: {verdict.subject}")
    if verdict.diff is not None:  # what differs between the rebuilt program and the stored one
        _print_diff(verdict.diff, [])
    if verdict.causes:
        print("likely causes (what changed since the build):")
    for cause in verdict.causes:
        print(f"  - {cause}")
    return EXIT_NOT_ALL_WELL


def _arguments(p) -> None:
    p.add_argument("id", nargs="?", metavar="ID", help=ID_HELP)
    p.add_argument(
        "--recipe",
        metavar="RECIPE",
        help="build this recipe and compare with ID, or with the recipe's newest artifact; the way to check an "
        "artifact your key did not sign (its own config.yaml is never run)",
    )
    _searchpath_argument(p)


COMMAND = Command(
    "verify",
    "rebuild in a temporary store and compare model.pte byte for byte (exit 0 MATCH, 1 DIFFERS); only a "
    "trusted artifact's own config.yaml is built",
    (
        "ethosu-artifacts verify digits_cnn/v2",
        "ethosu-artifacts verify --recipe digits_u55",
        "ethosu-artifacts verify digits_cnn/v2 --recipe my_recipe --searchpath conf",
    ),
    _arguments,
    run,
    user_code=True,
)
