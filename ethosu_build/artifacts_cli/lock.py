"""`ethosu-artifacts lock RECIPE`: pin a recipe's tool versions and input fingerprints in
RECIPE.lock.json beside it (store/provenance.py). Composes the recipe: Hydra and the
pipeline's fingerprints are imported inside `run`."""

from __future__ import annotations

from pathlib import Path

from .. import numerics
from ..errors import EXIT_OK, ConfigIssue, UsageError
from ..store.artifacts import ArtifactStore
from .common import Command, _recipe, _searchpath_argument


def run(store: ArtifactStore, args) -> int:
    from ..fingerprint import tool_versions
    from ..pipeline.build import fingerprints
    from ..store import provenance

    _, cfg, path = _recipe(args)
    package = Path(__file__).resolve().parents[1]  # ethosu_build/
    if package in path.resolve().parents:  # a lock beside it would go into the installed package
        raise UsageError(
            ConfigIssue(
                "RECIPE",
                f"{args.recipe!r} is a built-in recipe ({path}); a lock is written beside its recipe, which would be "
                f"the installed package; accepted: a recipe of yours: copy it to conf/recipe/{args.recipe}.yaml in "
                f"your repository and run `ethosu-artifacts lock {args.recipe} --searchpath conf`",
            )
        )
    lock = provenance.lock_path(path)
    provenance.write_lock(
        lock, provenance.lock_content(args.recipe, tool_versions(), fingerprints(cfg), numerics.describe())
    )
    print(f"wrote {lock}")
    return EXIT_OK


def _arguments(p) -> None:
    p.add_argument("recipe", metavar="RECIPE", help="a recipe of yours (recipe/RECIPE.yaml on the search path)")
    _searchpath_argument(p)


COMMAND = Command(
    "lock",
    "pin a recipe's tool versions and input fingerprints in RECIPE.lock.json beside it",
    ("ethosu-artifacts lock my_recipe --searchpath conf",),
    _arguments,
    run,
    reads_store=False,
    user_code=True,
)
