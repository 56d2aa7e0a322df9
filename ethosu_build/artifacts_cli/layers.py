"""`ethosu-artifacts layers ID`: where a stored artifact's accuracy goes, layer by layer
(pipeline/layers.py): the PT2E quantized model against the float one at every quantized
point, from the stage cache (nothing is rebuilt) on the build's evaluation samples; with
--deployed, the deployed program inside its NPU partitions against the PT2E model
(pipeline/deployed_layers.py); with --fixes, the quantizer's fixes measured (search/fixes.py)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import EXIT_NOT_ALL_WELL, EXIT_OK, ConfigIssue, UsageError
from ..store.artifacts import ArtifactStore
from .common import ID_HELP, Command, _changed_after_check, _checked, _print_markdown, _quiet_imports, _resolve


def run(store: ArtifactStore, args) -> int:
    _quiet_imports()
    from ..pipeline import layers

    a = _resolve(store, args.id, "ID")
    checked = _checked(a, "ID", "diagnosing")
    if args.samples is not None and args.samples < 1:
        raise UsageError(ConfigIssue("--samples", f"{args.samples} is not a count; accepted: 1 or more"))
    if args.fixes < 0:
        raise UsageError(ConfigIssue("--fixes", f"{args.fixes} is not a count; accepted: 0 (none) or more"))
    if args.write_recipe and not args.fixes:
        raise UsageError(ConfigIssue("--write-recipe", "needs --fixes N: the recipe is the best measured fix"))
    m = checked.manifest
    cfg, stages = layers.stored_stages(m, store.root)  # loaded once: the table and --deployed share them
    samples = layers.evaluation_samples(cfg, args.samples)
    d = layers.of_stages(cfg, stages, samples)
    out = {**d, **layers.worst(d)}
    lines = layers.report_section(d)
    if args.deployed:
        from ..pipeline import deployed_layers

        with _changed_after_check(a, "ID"):
            out["deployed"] = inside = deployed_layers.of_artifact(m, a, cfg, stages["quantize"], samples)
        lines += deployed_layers.report_section(inside)
    if args.fixes:
        from ..search import fixes

        out["fixes"] = found = fixes.measure(m, store.root, d, args.fixes)
        lines += fixes.markdown(found)
        if args.write_recipe:
            lines += ["", _write_recipe(m, found, args.write_recipe, Path(args.recipe_dir))]
    if args.plot:
        layers.plot(d, args.plot)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        _print_markdown("\n".join(lines).lstrip("\n"))
    return EXIT_OK if d["compared"] else EXIT_NOT_ALL_WELL


def _write_recipe(m: dict, found: dict, name: str, folder: Path) -> str:
    """The best fix within the artifact's budgets as a recipe (sweep/recipes.py's format)."""
    import copy

    from ..config.validate import validate
    from ..search import fixes
    from ..sweep import recipes

    chosen = fixes.best(found)
    if chosen is None:
        return "No fix gained SQNR within the artifact's budgets: no recipe written."
    container = copy.deepcopy(m["config"])
    container["overrides"] = {**(container.get("overrides") or {}), **chosen["entries"]}
    container["name"] = name
    comments = [
        f"{m['name']}/v{m['version']} with the best measured fix of `ethosu-artifacts layers --fixes`: {chosen['fix']} "
        f"at {chosen['module']} ({chosen['what']}): SQNR {chosen['sqnr_db']} dB ({chosen['sqnr_gain_db']:+} dB), "
        f"{chosen['cycles']} Vela cycles ({chosen['cycles_delta_pct']:+}%)",
    ]
    path = recipes.write(folder, name, validate(container), {}, comments)
    return f"Wrote the best fix as a recipe: {path}"


def _arguments(p) -> None:
    p.add_argument("id", metavar="ID", help=ID_HELP)
    p.add_argument("--json", action="store_true", help="print the table and its sorted views as JSON")
    p.add_argument(
        "--samples", type=int, default=None, help="the first N evaluation samples (default: all the build's)"
    )
    p.add_argument("--plot", metavar="FILE", default=None, help="also draw accumulated and local SQNR to a PNG")
    p.add_argument(
        "--deployed",
        action="store_true",
        help="also compare the deployed program inside its NPU partitions (TOSA reference model) with the PT2E "
        "model, on the first evaluation.tosa_samples samples (a second lowering, in memory, names the operators)",
    )
    p.add_argument(
        "--fixes",
        type=int,
        default=0,
        metavar="N",
        help="build the quantizer's fixes for the N layers with the largest local error, measured and priced",
    )
    p.add_argument(
        "--write-recipe",
        metavar="NAME",
        default=None,
        help="write the best fix within the artifact's budgets as DIR/recipe/NAME.yaml",
    )
    p.add_argument("--recipe-dir", metavar="DIR", default=".", help="where --write-recipe writes (default: .)")


COMMAND = Command(
    "layers",
    "where the accuracy goes: per-layer SQNR, range use and clipping of the quantized model against the float one",
    (
        "ethosu-artifacts layers digits_cnn",
        "ethosu-artifacts layers digits_cnn/v2 --json --plot layers.png",
        "ethosu-artifacts layers digits_cnn --deployed",
        "ethosu-artifacts layers digits_cnn --fixes 2 --write-recipe digits_fixed --recipe-dir recipes",
    ),
    _arguments,
    run,
)
