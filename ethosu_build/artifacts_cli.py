"""`ethosu-artifacts`: list, inspect, check and copy artifacts.

    ethosu-artifacts [--root outputs] ls [NAME] [--target T] [--scheme S] [--check] [--json]
    ethosu-artifacts [--root outputs] show ID|PATH [--json]
    ethosu-artifacts [--root outputs] diff A B
    ethosu-artifacts [--root outputs] verify ID|PATH       # rebuild and compare model.pte
    ethosu-artifacts [--root outputs] export ID DIR        # copy for firmware use
    ethosu-artifacts [--root outputs] gc [--dry-run] [--artifact ID ...]
    ethosu-artifacts lock RECIPE [--searchpath DIR]         # write recipes/RECIPE.lock.json
    ethosu-artifacts [--root outputs] verify --recipe RECIPE [--searchpath DIR]
    ethosu-artifacts summarize SWEEP_DIR [--json]           # summary.csv/.md, pareto.png

Everything but `verify` reads files only: no torch import.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .store import Artifact, ArtifactStore


def _row(a: Artifact, m: dict[str, Any]) -> dict[str, Any]:
    cfg = m.get("config", {})
    d = m.get("delegation", {})
    return {
        "id": a.id,
        "created": m.get("created", ""),
        "target": cfg.get("target", {}).get("accelerator", "?"),
        "scheme": cfg.get("quantization", {}).get("scheme", "?"),
        "overrides": len(cfg.get("overrides", {})),
        "npu_partitions": d.get("npu_partitions"),
        "cpu_ops": d.get("cpu_op_count"),
        "pte_bytes": m.get("files", {}).get("model.pte", {}).get("size"),
    }


def cmd_ls(store: ArtifactStore, args) -> int:
    from .store import check

    rows, damaged = [], 0
    for a in store.all():
        if args.name and a.name != args.name:
            continue
        try:
            row = _row(a, a.manifest())
        except (OSError, ValueError) as exc:
            damaged += 1
            print(f"warning: {a.id}: unreadable manifest ({exc})", file=sys.stderr)
            if args.check:
                rows.append({**dict.fromkeys(("created", "target", "scheme", "overrides", "npu_partitions", "cpu_ops", "pte_bytes"), ""),
                             "id": a.id, "check": f"manifest.json: unreadable ({exc})"})
            continue
        if args.target and row["target"] != args.target:
            continue
        if args.scheme and row["scheme"] != args.scheme:
            continue
        if args.check:
            checked = check(a)
            row["check"] = "; ".join(checked.problems) or ("ok" if checked.trust == "ok" else f"ok (files); manifest {_TRUST[checked.trust]}")
            damaged += bool(checked.problems)
            if checked.problems:  # also below the table, whatever the terminal's width
                print(f"damaged: {a.id}: {row['check']}", file=sys.stderr)
        rows.append(row)
    findings = [f for f in store.scan() if not args.name or f.path.split("/")[0] == args.name] if args.check else []
    damaged += sum(f.damage for f in findings)
    rows.sort(key=lambda r: r["created"], reverse=True)  # newest first
    if args.json:
        print(json.dumps(rows + [{"id": f.path, "check": f.problem, "damage": f.damage} for f in findings], indent=1))
        return 1 if damaged else 0
    table = Table(title=f"artifacts in {store.dir}", title_justify="left")
    cols = ["id", "created", "target", "scheme", "overrides", "npu_partitions", "cpu_ops", "pte_bytes"] + (["check"] if args.check else [])
    for col in cols:
        table.add_column(col.replace("_", " "), justify="right" if col in ("overrides", "npu_partitions", "cpu_ops", "pte_bytes") else "left")
    for r in rows:
        table.add_row(*(str(r[c]) for c in cols))
    Console().print(table if rows else f"no artifacts in {store.dir}")
    for f in findings:
        print(f"{'damaged' if f.damage else 'debris'}: {store.dir / f.path}: {f.problem}", file=sys.stderr)
    if damaged:
        print(f"{damaged} artifact(s) or version folder(s) are damaged (see above); `gc` removes debris and half-present versions", file=sys.stderr)
    return 1 if damaged else 0


_TRUST = {"ok": "signed by your key", "other_key": "signed by another key (not verifiable with yours)",
          "missing": "unsigned", "bad": "changed since it was signed"}


def _resolve(store: ArtifactStore, ref: str):
    from .store import NotAnArtifact

    try:
        return store.resolve(ref)
    except NotAnArtifact as exc:
        print(f"ethosu-artifacts: {exc}", file=sys.stderr)
        sys.exit(2)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def cmd_diff(store: ArtifactStore, args) -> int:
    a, b = _resolve(store, args.a), _resolve(store, args.b)
    ma, mb = a.manifest(), b.manifest()
    table = Table(title=f"{a.id} vs {b.id}", title_justify="left")
    for col in ("key", a.id, b.id):
        table.add_column(col)
    n = 0
    for section in ("config", "metrics", "tools", "fingerprints"):
        fa, fb = _flatten(ma.get(section, {}), section), _flatten(mb.get(section, {}), section)
        for key in sorted(set(fa) | set(fb)):
            if fa.get(key) != fb.get(key):
                table.add_row(key, str(fa.get(key, "-")), str(fb.get(key, "-")))
                n += 1
    same_pte = ma["files"]["model.pte"]["sha256"] == mb["files"]["model.pte"]["sha256"]
    Console().print(table if n else "no differences in config, metrics, tools or fingerprints")
    print(f"model.pte: {'identical' if same_pte else 'different'} bytes")
    return 0


def _compose_recipe(name: str, searchpath: str | None):
    """The recipe's composed config as `ethosu-build recipe=NAME` would build it, its file."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf, open_dict

    from .errors import ConfigError, ConfigIssue
    from .provenance import recipe_file
    from .validate import validate

    overrides = [f"recipe={name}"] + ([f"hydra.searchpath=[file://{Path(searchpath).resolve()}]"] if searchpath else [])
    with initialize_config_module("ethosu_build.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        sources = [f"file://{Path(searchpath).resolve()}"] if searchpath else []
        sources.append("pkg://ethosu_build.conf")
        with open_dict(cfg):
            del cfg["hydra"]
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    path = recipe_file(name, sources)
    if path is None:
        raise ConfigError(ConfigIssue("recipe", f"{name!r} not found"))
    return container, validate(container, default_name=name), path


def cmd_lock(store: ArtifactStore, args) -> int:
    from . import provenance
    from .build import fingerprints
    from .fingerprint import tool_versions

    _, cfg, path = _compose_recipe(args.recipe, args.searchpath)
    lock = provenance.lock_path(path)
    provenance.write_lock(lock, provenance.lock_content(args.recipe, tool_versions(), fingerprints(cfg)))
    print(f"wrote {lock}")
    return 0


def _verify_recipe(store: ArtifactStore, args) -> int:
    """Build the committed recipe in a temporary store and compare with its newest artifact."""
    import tempfile

    from .build import build
    from .fingerprint import file_sha256
    from .verify import drift

    container, cfg, path = _compose_recipe(args.recipe, args.searchpath)
    versions = store.versions(cfg.name)
    if not versions:
        print(f"ethosu-artifacts: no artifact named {cfg.name!r} in {store.dir} to verify recipe {args.recipe!r} against", file=sys.stderr)
        return 2
    newest = versions[-1]
    with tempfile.TemporaryDirectory(prefix="ethosu-verify-") as tmp:
        container["store"] = {"root": tmp}
        built = file_sha256(build(container, recipe=args.recipe, recipe_path=path).artifact.path / "model.pte")
    stored = newest.manifest()["files"]["model.pte"]["sha256"]
    if built == stored:
        print(f"MATCH: recipe {args.recipe} rebuilds {newest.id} (sha256 {stored})")
        return 0
    print(f"DIFFERS: recipe {args.recipe} builds sha256 {built}, {newest.id} holds {stored}")
    for cause in drift(newest.manifest()) or ["the recipe itself changed since that build (see ethosu-artifacts diff)"]:
        print(f"  - {cause}")
    return 1


def cmd_verify(store: ArtifactStore, args) -> int:
    import logging

    from .verify import check_files, rebuild

    # The rebuild imports torch/executorch, whose import-time warnings say nothing about it.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    if args.recipe:
        return _verify_recipe(store, args)
    if not args.id:
        print("ethosu-artifacts: verify needs an artifact ID/PATH or --recipe NAME", file=sys.stderr)
        return 2
    a = _resolve(store, args.id)
    problems = check_files(a)
    if problems:
        print(f"DIFFERS: {a.id} does not match its manifest: " + "; ".join(problems))
        return 1
    from .budgets import BudgetBreached
    from .errors import BuildError, ConfigError
    from .verify import drift

    try:
        verdict = rebuild(a)
    except (ConfigError, BuildError, BudgetBreached) as exc:
        print(f"DIFFERS: {a.id} no longer builds from its config: {str(exc).splitlines()[-1].strip()}")
        for cause in drift(a.manifest()):
            print(f"  - {cause}")
        return 1
    if verdict.match:
        print(f"MATCH: {a.id} rebuilds to the same model.pte (sha256 {verdict.stored_sha256})")
        for cause in drift(a.manifest()):  # inputs that changed without changing the bytes
            print(f"  note: {cause}")
        return 0
    print(f"DIFFERS: {a.id} rebuilds to sha256 {verdict.built_sha256}, stored {verdict.stored_sha256}")
    for cause in verdict.causes:
        print(f"  - {cause}")
    return 1


def cmd_export(store: ArtifactStore, args) -> int:
    from .store import MANIFEST, REPORT, check

    a = _resolve(store, args.id)
    dest = Path(args.dir)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        print(f"ethosu-artifacts: export DIR {args.dir!r} exists and is not a folder; accepted: a new or existing folder", file=sys.stderr)
        return 2
    real = dest.resolve()
    for inside in (store.dir, store.root / "cache"):
        if real == inside.resolve() or inside.resolve() in real.parents:
            print(f"ethosu-artifacts: export DIR {args.dir!r} is inside the store ({inside}); accepted: a folder outside "
                  f"{store.dir} and {store.root / 'cache'}", file=sys.stderr)
            return 2
    problems = check(a).problems
    if problems:
        print(f"ethosu-artifacts: not exporting {a.id}: " + "; ".join(problems), file=sys.stderr)
        return 1
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.pte", MANIFEST, REPORT):
        if (a.path / name).is_file():
            _write_atomic(dest / name, (a.path / name).read_bytes())
    print(f"exported {a.id} to {dest}")
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def cmd_gc(store: ArtifactStore, args) -> int:
    """Remove the artifacts named with --artifact, the store's debris, and the cache entries
    no remaining artifact rests on. The store and the cache each clean their own layout."""
    from .cache import StageCache

    remove = [_resolve(store, ref) for ref in args.artifact or []]
    keep: set[str] = set()
    for a in store.all():
        if a in remove:
            continue
        try:
            keep.update(str(k) for k in (a.manifest().get("stage_keys") or {}).values())
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable manifest protects nothing: its stages can be rebuilt
    removed = store.gc(remove, dry_run=args.dry_run)
    cache = StageCache(store.root).gc(keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    n = len(cache.removed)
    print(f"{verb} {n} cache entr{'y' if n == 1 else 'ies'} or leftover file(s), and {len(removed)} artifact folder(s) {' '.join(removed)}".rstrip())
    return 0


def cmd_show(store: ArtifactStore, args) -> int:
    a = _resolve(store, args.id)
    if args.json:
        print(json.dumps(a.manifest(), indent=1))
        return 0
    from rich.markdown import Markdown

    from .report import render
    from .store import REPORT

    text = (a.path / REPORT).read_text() if (a.path / REPORT).is_file() else render(a.manifest(), a.path / "vela")
    Console().print(Markdown(text))
    return 0


def cmd_summarize(store: ArtifactStore, args) -> int:
    """Rebuild a sweep's summary from its job dirs (also of a sweep that was killed)."""
    from . import sweep

    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"ethosu-artifacts: {folder} is not a folder; give a sweep dir (e.g. outputs/sweeps/DATE/TIME)", file=sys.stderr)
        return 2
    summary = sweep.summarize(folder)
    if args.json:
        print(json.dumps(summary.rows, indent=1))
        return 0
    from rich.markdown import Markdown

    Console().print(Markdown((folder / sweep.SUMMARY_MD).read_text()))
    print("wrote " + ", ".join(str(f) for f in summary.files))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ethosu-artifacts", description="List and inspect ethosu-build artifacts.")
    parser.add_argument("--root", default="outputs", help="store root (store.root of the builds); default: outputs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ls", help="list artifacts, newest first")
    p.add_argument("name", nargs="?", help="only this artifact name")
    p.add_argument("--target", help="only this accelerator, e.g. ethos-u55-128")
    p.add_argument("--scheme", help="only this global scheme, e.g. int8")
    p.add_argument("--check", action="store_true", help="verify every file's sha256 against its manifest (exit 1 if any differs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("show", help="one artifact's manifest as tables")
    p.add_argument("id", help="NAME/vN, NAME (newest version) or a version folder")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("diff", help="config, metric, tool and fingerprint differences of two artifacts")
    p.add_argument("a")
    p.add_argument("b")
    p.set_defaults(func=cmd_diff)
    p = sub.add_parser("verify", help="check files, rebuild from config.yaml in a temporary store, compare model.pte (exit 0 MATCH, 1 DIFFERS)")
    p.add_argument("id", nargs="?")
    p.add_argument("--recipe", help="build this recipe and compare with its newest artifact instead")
    p.add_argument("--searchpath", help="a folder with your own config groups (as hydra.searchpath)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("lock", help="pin a recipe's tool versions and input fingerprints in RECIPE.lock.json beside it")
    p.add_argument("recipe")
    p.add_argument("--searchpath", help="a folder with your own config groups (as hydra.searchpath)")
    p.set_defaults(func=cmd_lock)
    p = sub.add_parser("export", help="copy model.pte, manifest.json and report.md to DIR")
    p.add_argument("id")
    p.add_argument("dir")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("gc", help="remove cache entries no artifact needs; artifacts only when named")
    p.add_argument("--artifact", action="append", help="also remove this artifact version (repeatable)")
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("summarize", help="write summary.csv, summary.md and pareto.png of a sweep dir from its job results")
    p.add_argument("dir", help="the sweep dir (hydra.sweep.dir), e.g. outputs/sweeps/2026-11-28/12-00-00")
    p.add_argument("--json", action="store_true", help="print the rows")
    p.set_defaults(func=cmd_summarize)
    args = parser.parse_args(argv)
    from .errors import ConfigError

    # As in ethosu-build: a repo's own model code imports from the folder we run in.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        sys.exit(args.func(ArtifactStore(args.root), args))
    except ConfigError as exc:
        print(f"ethosu-artifacts: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
