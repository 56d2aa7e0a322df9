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

Each command parses its arguments and delegates to store/ or pipeline/; this module only
prints. Errors go through config.errors.report, as in ethosu-build. Everything but
`verify` and `lock` reads files only: no torch import. Every command that prints, copies or
rebuilds from an artifact asks `store.artifacts.check` first (`_checked`): the one rule of
trust (docs/trust.md).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import numerics, run_dirs
from .config import objective
from .config.schema import NAME
from .errors import IO_ERRNOS, ConfigError, ConfigIssue, UsageError, io_failure, report
from .files import printable
from .pipeline.firmware import DEFAULT_BUNDLE_SAMPLES, DEFAULT_SECTION, SECTION_NAME
from .store.artifacts import (
    MANIFEST,
    Artifact,
    ArtifactStore,
    Check,
    DamagedManifest,
    NotAnArtifact,
    check,
    snapshot,
    verified_bytes,
)
from .store.trust import TRUST_WORDS, store_key

PROG = "ethosu-artifacts"
numerics.pin()  # verify builds: on the same kernels as every build (numerics.py)


# --- helpers ----------------------------------------------------------------------------------


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


def _manifest(a: Artifact, arg: str) -> dict[str, Any]:
    try:
        return a.manifest()
    except DamagedManifest as exc:
        raise UsageError(ConfigIssue(arg, f"{exc}; `ethosu-artifacts ls --check` lists damaged versions")) from exc


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
    """verify and export --firmware import torch/executorch, whose import-time warnings
    (torchao's CUDA kernels that do not load, torch's deprecations) say nothing about them."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for noisy in ("torchao", "torch.utils._pytree"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _at(obj: Any, *keys: str, kind: type | tuple = (int, float)) -> Any:
    """obj[k1][k2]... when every level is a mapping and the value is of `kind`, else None: a
    listing shows what a manifest holds, whatever an unsigned one was made to hold."""
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj if isinstance(obj, kind) and not isinstance(obj, bool) else None


def _summary_row(a: Artifact, m: dict[str, Any]) -> dict[str, Any]:
    """What people compare artifacts by (the manifest, docs/artifacts.md)."""
    overrides = len(_at(m, "config", "overrides", kind=dict) or {})
    scheme = _at(m, "config", "quantization", "scheme", kind=str) or "?"
    memory = _at(m, "memory", kind=dict)
    return {
        "id": a.id,
        "version": a.version,
        "created": _at(m, "created", kind=str) or "",
        "target": _at(m, "config", "target", "accelerator", kind=str) or "?",
        "scheme": scheme + (f"+{overrides}" if overrides else ""),
        "inference_ms": _at(m, "metrics", "vela", "total", "inference_ms"),
        # the memory bill's, as budgets, objectives and sweep summaries name them (docs/sweeps.md)
        "sram_kib": objective.METRICS["sram_kib"].read(m) if _at(memory, "regions", "sram") is not None else None,
        "flash_kib": objective.METRICS["flash_kib"].read(m) if _at(memory, "regions", "flash") is not None else None,
        "vela_sram_kib": _at(m, "metrics", "vela", "total", "sram_kib"),
        "top1": _at(m, "metrics", "accuracy", "quantized_top1"),
        "sqnr_db": _at(m, "metrics", "accuracy", "sqnr_db"),
        "npu_partitions": _at(m, "delegation", "npu_partitions"),
        "cpu_ops": _at(m, "delegation", "cpu_compute_op_count"),
        "pte_bytes": _at(m, "files", "model.pte", "size"),
    }


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


# --- commands ---------------------------------------------------------------------------------


def cmd_ls(store: ArtifactStore, args) -> int:
    if args.name is not None and not NAME.match(args.name):
        raise UsageError(
            ConfigIssue(
                "NAME",
                f"{args.name!r} is not an artifact name; accepted: a name as `ls` lists them (letters, digits, _ - .); "
                "for one version, `ethosu-artifacts show NAME/vN`",
            )
        )
    if args.check and not store.root.is_dir():  # nothing checked is not "all is well"
        raise UsageError(ConfigIssue("--root", f"{str(store.root)!r} is no folder; accepted: a store.root of builds"))
    rows, damaged = [], 0
    for a in store.all():
        if args.name and a.name != args.name:
            continue
        # Every row's manifest is checked (signature and place: cheap); --check also hashes
        # every file. A row whose figures are only its own word is marked as such.
        checked = check(a, hash_files=args.check)
        if checked.manifest is None:
            damaged += 1
            print(printable(f"damaged: {a.id}: {checked.why}"), file=sys.stderr)
            if args.check:
                rows.append({"id": a.id, "created": "", "check": checked.why})
            continue
        row = _summary_row(a, checked.manifest)
        if (args.target and row["target"] != args.target) or (
            args.scheme and row["scheme"].split("+")[0] != args.scheme
        ):
            continue
        row["trusted"] = checked.trusted
        why = "; ".join(checked.problems) or checked.why  # ls --check lists every problem
        if args.check:
            row["check"] = "ok" if checked.trusted else f"untrusted: {why}"
            damaged += not checked.trusted
        if not checked.trusted:  # also below the table, whatever the terminal's width
            print(printable(f"{'damaged' if checked.problems else 'untrusted'}: {a.id}: {why}"), file=sys.stderr)
        rows.append(row)
    findings = [f for f in store.scan() if not args.name or f.path.split("/")[0] == args.name] if args.check else []
    damaged += sum(f.damage for f in findings)
    rows.sort(
        key=lambda r: (r["created"], r["id"].rsplit("/v", 1)[0], r.get("version", 0)), reverse=True
    )  # newest first
    if args.json:
        print(json.dumps(rows + [{"id": f.path, "check": f.problem, "damage": f.damage} for f in findings], indent=1))
    else:
        _print_table(store, rows, args.check)
    for f in findings:
        kind = "damaged" if f.damage else "debris (gc removes it)" if f.gc_removes else "stray (gc leaves it)"
        print(f"{kind}: {printable(repr(str(store.dir / f.path))[1:-1])}: {f.problem}", file=sys.stderr)
    if damaged:
        print(
            f"{damaged} artifact(s) or version folder(s) are damaged or not trusted (see above; docs/trust.md); "
            "`gc` removes debris and half-present versions",
            file=sys.stderr,
        )
    return 1 if damaged else 0


def _print_table(store: ArtifactStore, rows: list[dict[str, Any]], with_check: bool) -> None:
    """The figures people compare, in 80 columns: the id is never cut; top-1 where every
    build has labelled evaluation data, else SQNR. `--json` has every field."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    if not rows:
        print(f"no artifacts in {store.dir}")
        return
    built = [r for r in rows if "target" in r]
    quality = (
        ("top-1%", "top1", 4) if built and all(r.get("top1") is not None for r in built) else ("SQNR dB", "sqnr_db", 3)
    )
    table = Table(
        title=f"artifacts in {store.dir}, newest first (ms: Vela's estimate; SRAM and flash KiB: the memory bill)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1),
    )
    ids = [r["id"] + ("" if r.get("trusted", True) else " (untrusted)") for r in rows]
    table.add_column("id", no_wrap=True, min_width=max(map(len, ids)))  # never cut, the marker with it
    table.add_column("target", no_wrap=True)
    table.add_column("scheme", no_wrap=True)
    for head in ("ms", "SRAM", "flash", quality[0]):
        table.add_column(head, justify="right", no_wrap=True)
    if with_check:
        table.add_column("check", overflow="fold", ratio=1)
    for r in rows:
        cells = [
            r["id"] + ("" if r.get("trusted", True) else " (untrusted)"),
            str(r.get("target", "")).removeprefix("ethos-"),
            r.get("scheme", ""),
            _num(r.get("inference_ms")),
            _num(r.get("sram_kib")),
            _num(r.get("flash_kib")),
            _num(r.get(quality[1]), quality[2]),
        ]
        verdict = r.get("check", "")
        cells += [verdict if verdict == "ok" else "UNTRUSTED (below)"] if with_check else []
        # Text, not markup: a manifest's strings are data ('[bold]' printed as written, no escapes)
        table.add_row(*(Text(printable(str(c))) for c in cells))
    _console().print(table, crop=False)  # a terminal narrower than an id overflows, never cuts it


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def cmd_diff(store: ArtifactStore, args) -> int:
    """The semantic diff's verdict (pipeline/diff.py), then the inputs that changed: config,
    tools, fingerprints. Exit 0 only for identical bytes."""
    from .pipeline.diff import diff

    _quiet_imports()  # the program reader imports ExecuTorch, whose import warnings say nothing of this
    a, b = _resolve(store, args.a, "A", foreign=True), _resolve(store, args.b, "B", foreign=True)
    # Either side may come from another store or machine (another key): compared by its bytes
    # once its files match its own manifest, and said so. The comparison reads private copies
    # of the checked bytes (store.artifacts.snapshot), which no one can swap meanwhile.
    checks = {"A": _checked(a, "A", "comparing", True), "B": _checked(b, "B", "comparing", True)}
    for side, c in checks.items():
        if "model.pte" not in c.manifest["files"]:
            raise UsageError(ConfigIssue(side, f"{(a if side == 'A' else b).id} lists no model.pte to compare"))
    ma, mb = checks["A"].manifest, checks["B"].manifest
    with tempfile.TemporaryDirectory(prefix="ethosu-diff-") as tmp:
        with _changed_after_check(a, "A"):
            sa = snapshot(a, checks["A"], Path(tmp, "A"))
        with _changed_after_check(b, "B"):
            sb = snapshot(b, checks["B"], Path(tmp, "B"))
        try:
            result = diff(sa, sb, ids=(a.id, b.id))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, struct.error) as exc:
            untrusted = [side for side, c in checks.items() if not c.trusted]
            if not untrusted:
                raise  # our own signed programs: a bug, with its traceback
            raise UsageError(
                ConfigIssue(untrusted[0], f"its files match its manifest but cannot be read as a build ({exc})")
            ) from exc
    result.trust = {side: c.why or TRUST_WORDS["ok"] for side, c in checks.items()}
    changed = []
    for section in ("config", "tools", "fingerprints", "platform"):
        fa, fb = _flatten(ma.get(section, {}), section), _flatten(mb.get(section, {}), section)
        changed += [
            {"key": k, "a": fa.get(k), "b": fb.get(k)}
            for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and k != "config.store.root"  # where it was stored is no input
        ]
    if args.json:
        print(json.dumps({**result.as_json(), "inputs_changed": changed}, indent=1, default=str))
    else:
        _print_diff(result, changed)
    return 0 if result.verdict == "identical" else 1


def _print_diff(result, changed: list[dict[str, Any]]) -> None:
    """The verdict and what changed; every line through `printable`: a side not signed here
    says what it likes in its manifest, and none of it may drive the terminal."""

    def say(line: str) -> None:
        print(printable(line))

    say(f"{result.a} vs {result.b}: {result.verdict}" + (f" (first cause: {result.cause})" if result.cause else ""))
    for side, why in (result.trust or {}).items():
        if why != TRUST_WORDS["ok"]:
            say(f"  note: {side} is not signed here ({why}): compared by its bytes, which match its own manifest")
    for d in result.differences:
        say(f"  {'-' if d.decides else '~'} {d.level}: {d.what}")
    if result.largest_qparam_change:
        q = result.largest_qparam_change
        how = "changed" if q["relative"] is None else f"{q['relative']:.3g} relative"
        say(f"  largest quantization parameter change: {q['tensor']}, {how}")
    out = result.outputs
    if out:
        say(
            "  outputs: "
            + (
                f"max {out['max_lsb']} LSB apart on {out['samples']} samples"
                if out.get("compared")
                else f"not compared: {out['reason']}"
            )
        )
    if changed:
        say("inputs that differ (config, tools, fingerprints, platform):")
        for c in changed[:40]:
            say(f"  {c['key']}: {c['a']} -> {c['b']}")
        if len(changed) > 40:
            say(f"  ... and {len(changed) - 40} more (--json lists them all)")


def _recipe(args) -> tuple[dict[str, Any], Any, Path]:
    """The recipe's composed config as `ethosu-build recipe=NAME` would build it, validated,
    and its file."""
    from .config.compose import compose
    from .config.validate import validate
    from .store.provenance import recipe_file

    container, _, sources = compose([f"recipe={args.recipe}"], args.searchpath)
    path = recipe_file(args.recipe, sources)
    if path is None:  # compose found it: this only happens for a recipe outside a recipe/ folder
        raise UsageError(
            ConfigIssue("RECIPE", f"{args.recipe!r} has no file under a recipe/ folder of the search path")
        )
    return container, validate(container, default_name=args.recipe), path


def cmd_lock(store: ArtifactStore, args) -> int:
    from .fingerprint import tool_versions
    from .pipeline.build import fingerprints
    from .store import provenance

    _, cfg, path = _recipe(args)
    package = Path(__file__).resolve().parent
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
    return 0


def cmd_verify(store: ArtifactStore, args) -> int:
    from .pipeline import verify

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
        return 0
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
    return 1


def cmd_export(store: ArtifactStore, args) -> int:
    """Copy the artifact whole (every file its manifest lists, and the manifest), or with
    --firmware also derive the firmware bundle (pipeline/firmware.py), into DIR. Everything
    is written to a staging folder beside DIR first and moved in only when complete: a
    refused or failed export leaves DIR as it was. An exported folder is an artifact of no
    store: `diff` checks it against its own manifest."""
    a = _resolve(store, args.id, "ID")
    dest = _export_dir(store, args)
    if args.firmware and not SECTION_NAME.match(args.section):
        raise UsageError(
            ConfigIssue("--section", f"{args.section!r} is not a linker section name; accepted: e.g. .rodata.model")
        )
    if args.bundle_samples < 1:
        raise UsageError(
            ConfigIssue("--bundle-samples", f"{args.bundle_samples} is not a count; accepted: an integer >= 1")
        )
    checked = _checked(a, "ID", "exporting")
    # the checked manifest's bytes, and every file it lists read once and compared with it
    files = {MANIFEST: checked.manifest_bytes}
    with _changed_after_check(a, "ID"):
        files.update((name, verified_bytes(a, checked.manifest, name)) for name in checked.manifest["files"])
    notes = []
    if args.firmware:
        firmware_files, notes = _firmware_files(a, checked.manifest, files, args)
        files.update(firmware_files)
    _make_parent(dest, args.dir)
    try:
        _move_in(files, dest)
    except OSError as exc:
        if exc.errno in IO_ERRNOS:
            raise  # a failed export (exit 1, main's map), not a bad DIR
        raise UsageError(ConfigIssue("DIR", f"{args.dir!r} cannot be written ({exc.strerror or exc})")) from exc
    print(f"exported {a.id} to {dest}: {', '.join(sorted({n.split('/')[0] for n in files}))}")
    for note in notes:
        print(f"note: {note}")
    return 0


def _export_dir(store: ArtifactStore, args) -> Path:
    """DIR, if it is a new or empty folder (or --force) outside the store that can be made."""
    if not args.dir.strip():
        raise UsageError(ConfigIssue("DIR", "is empty; accepted: the path of a new or empty folder"))
    dest = Path(args.dir)
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise UsageError(
            ConfigIssue("DIR", f"{args.dir!r} exists and is not a folder; accepted: a new or empty folder")
        )
    real, root = dest.resolve(), store.root.resolve()
    if real == root or root in real.parents:  # the store writes only its own layout (docs/trust.md)
        raise UsageError(
            ConfigIssue("DIR", f"{args.dir!r} is inside the store {store.root}; accepted: a folder outside it")
        )
    if dest.is_dir() and any(dest.iterdir()) and not args.force:
        held = sorted(p.name for p in dest.iterdir())
        raise UsageError(
            ConfigIssue(
                "DIR",
                f"{args.dir!r} is not empty ({', '.join(held[:5])}{', ...' if len(held) > 5 else ''}); accepted: a "
                "new or empty folder, or --force to write the exported files over the ones of the same name",
            )
        )
    return dest


def _make_parent(dest: Path, arg: str) -> None:
    """DIR's parent folders, made only once the export is sure to be written (a refused one
    leaves no folder behind)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            ConfigIssue("DIR", f"{arg!r}: its parent folder cannot be made ({exc.strerror or exc})")
        ) from exc


def _firmware_files(a, m: dict[str, Any], verified: dict[str, bytes], args) -> tuple[dict[str, bytes], list[str]]:
    """The firmware bundle, from the checked manifest `m` and the `verified` bytes of its files."""
    from .pipeline import firmware

    _quiet_imports()
    pte = verified["model.pte"]
    if not m.get("memory") or not (m.get("delegation") or {}).get("runtime"):
        raise UsageError(
            ConfigIssue(
                "ID",
                f"{a.id} was built before ethosu-build recorded the memory bill and IO contract; rebuild it to export "
                "firmware files",
            )
        )
    files = {
        "model_pte.h": firmware.model_pte_h(pte, args.section).encode(),
        "model_io.h": firmware.model_io_h(m, firmware.io_names(m)).encode(),
        "memory.h": firmware.memory_h(m).encode(),
        "selected_ops.txt": (",".join(firmware.program_operators(pte)) + "\n").encode(),
    }
    notes = []
    check_io = verified.get("check/tosa_io.npz")
    if check_io is not None:
        files["model.bpte"], n = firmware.bundled_program(pte, check_io, args.bundle_samples)
        if n < args.bundle_samples:
            notes.append(f"model.bpte holds {n} test case(s): the build's TOSA check ran on {n} sample(s)")
    else:
        reason = (m.get("metrics") or {}).get("tosa_check", {}).get("reason") or "no TOSA check outputs were stored"
        notes.append(
            f"no model.bpte: {a.id} has no TOSA check outputs ({reason}); build with evaluation.tosa_check=true"
        )
    return files, notes


def _move_in(files: dict[str, bytes], dest: Path) -> None:
    """Write `files` (names may hold one folder level: vela/, check/) into a staging folder
    beside `dest`, then move them in: a new folder by one rename, an existing one file by
    file (each an atomic replace), never through a symlinked folder of DIR."""
    import shutil

    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.export-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # a new DIR as mkdir would make it, not mkdtemp's 0700
    try:
        for name, data in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(data)
        if not dest.exists():
            os.replace(staging, dest)
            return
        for folder in {Path(n).parent for n in files} - {Path(".")}:
            if (dest / folder).is_symlink() or (dest / folder).exists() and not (dest / folder).is_dir():
                raise UsageError(
                    ConfigIssue(
                        "DIR", f"{dest / folder} is a symlink or a file; accepted: a DIR with {folder}/ a folder"
                    )
                )
        # everything that could refuse a file is found before the first is replaced: a refused
        # export leaves DIR as it was
        taken = [n for n in files if (dest / n).is_dir() and not (dest / n).is_symlink()]
        if taken:
            raise UsageError(ConfigIssue("DIR", f"{dest / taken[0]} is a folder; accepted: a DIR where it is not"))
        for name in files:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cmd_gc(store: ArtifactStore, args) -> int:
    """Remove the artifacts named with --artifact, the store's debris, and the cache entries
    no remaining artifact rests on. The store and the cache each clean their own layout."""
    from .store.cache import StageCache

    remove = [_resolve(store, ref, "--artifact") for ref in args.artifact or []]
    keep: set[str] = set()
    for a in store.all():
        if a in remove:
            continue
        try:
            keep.update(str(k) for k in (a.manifest().get("stage_keys") or {}).values())
        except (DamagedManifest, AttributeError):
            continue  # a damaged manifest protects nothing: its stages can be rebuilt
    removed = store.gc(remove, dry_run=args.dry_run)
    cache = StageCache(store.root).gc(keep, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    n = len(cache.removed)
    names = " ".join(printable(repr(r)[1:-1]) for r in removed)  # planted names may hold escapes
    print(
        f"{verb} {n} cache entr{'y' if n == 1 else 'ies'} or leftover file(s), and {len(removed)} artifact folder(s) "
        f"{names}".rstrip()
    )
    return 0


def cmd_show(store: ArtifactStore, args) -> int:
    """The report of a trusted artifact. One whose files match its manifest but that your key
    did not sign (a store copied from elsewhere) is shown under a warning, exit 1: its
    figures are its own word. Damaged or misplaced: refused."""
    from .pipeline.report import render
    from .store.artifacts import REPORT

    a = _resolve(store, args.id, "ID")
    checked = _checked(a, "ID", "showing", signed_elsewhere=True)
    m = checked.manifest  # the bytes checked, never read again
    if not checked.trusted:
        print(
            f"warning: {a.id} is not trusted ({checked.why}): its files match its manifest, but nothing shows "
            "who wrote them; the figures below are its own word (docs/trust.md)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(m, indent=1))
    elif REPORT in m["files"]:
        with _changed_after_check(a, "ID"):
            text = verified_bytes(a, m, REPORT).decode("utf-8", "replace")
        _print_markdown(printable(text))
    else:
        with tempfile.TemporaryDirectory(prefix="ethosu-show-") as tmp, _changed_after_check(a, "ID"):
            _print_markdown(printable(render(m, snapshot(a, checked, Path(tmp)).path / "vela")))
    return 0 if checked.trusted else 1


def cmd_track(store: ArtifactStore, args) -> int:
    """Log stored artifacts to MLflow, as a build with tracking=mlflow would have (tracking.py):
    the way to backfill a store built before tracking was on. One already tracked under its
    build key is not logged again."""
    from . import tracking
    from .errors import TrackingError

    if not tracking.available():
        raise UsageError(ConfigIssue("track", f"mlflow is not installed; accepted: {tracking.EXTRA}"))
    artifacts = [_resolve(store, ref, "ID") for ref in args.ids]
    checks = [_checked(a, "ID", "tracking") for a in artifacts]  # nothing is taken as good unchecked
    if args.experiment is not None and not args.experiment.strip():
        raise UsageError(ConfigIssue("--experiment", "is empty; accepted: an experiment name"))
    settings = {"backend": "mlflow", "uri": args.uri, "experiment": args.experiment, "log_model": not args.no_model}
    try:
        tracker = tracking.Tracker(settings, store.root)
        for a, checked in zip(artifacts, checks):
            with tempfile.TemporaryDirectory(prefix="ethosu-track-") as tmp, _changed_after_check(a, "ID"):
                copy_ = snapshot(a, checked, Path(tmp))  # the checked bytes are logged
                rid, logged = tracker.log_artifact(copy_.path, checked.manifest, "stored", {})
            print(f"{a.id}: {'run' if logged else 'already tracked as run'} {rid} ({tracker.uri})")
    except Exception as exc:  # the tracker's own errors: name them, keep the store as it is
        raise TrackingError(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return 0


def cmd_summarize(store: ArtifactStore, args) -> int:
    """Rebuild a sweep's summary from its job dirs (also of a sweep that was killed)."""
    from .sweep import summary as sweep

    folder = Path(args.dir)
    if not sweep.is_sweep_dir(folder):
        raise UsageError(
            ConfigIssue(
                "SWEEP_DIR",
                f"{args.dir!r} is not a sweep dir (no job folders with a .hydra/ or "
                f"{sweep.RESULT}); accepted: a hydra.sweep.dir, e.g. outputs/sweeps/DATE/TIME",
            )
        )
    summary = sweep.summarize(folder)
    if args.json:
        print(json.dumps(summary.rows, indent=1))
        return 0
    _print_markdown((folder / sweep.SUMMARY_MD).read_text())
    print("wrote " + ", ".join(str(f) for f in summary.files))
    return 0


# --- the command line ---------------------------------------------------------------------------


_ID = "an artifact: NAME/vN, NAME (its newest version) or a version folder of the store"
_EXIT = (
    "exit codes: 0 all well; 1 damage or an untrusted version found (ls --check), DIFFERS (verify), other bytes "
    "(diff), a shown artifact your key did not sign (show); 2 a bad argument, or an artifact too damaged or untrusted "
    "to act on; 130 interrupted; 141 the output's reader stopped (| head)"
)
# Each command: its one-line help and the examples its own --help ends with.
_EXAMPLES = {
    "ls": [
        "ethosu-artifacts ls",
        "ethosu-artifacts ls digits_cnn --target ethos-u55-128",
        "ethosu-artifacts ls --check",
    ],
    "show": ["ethosu-artifacts show digits_cnn", "ethosu-artifacts show digits_cnn/v3 --json"],
    "diff": ["ethosu-artifacts diff digits_cnn/v1 digits_cnn/v2", "ethosu-artifacts diff digits_cnn ../ci/export"],
    "verify": [
        "ethosu-artifacts verify digits_cnn/v2",
        "ethosu-artifacts verify --recipe digits_u55",
        "ethosu-artifacts verify digits_cnn/v2 --recipe my_recipe --searchpath conf",
    ],
    "lock": ["ethosu-artifacts lock my_recipe --searchpath conf"],
    "export": [
        "ethosu-artifacts export digits_cnn fw/model",
        "ethosu-artifacts export digits_cnn/v2 fw/model --firmware",
    ],
    "gc": ["ethosu-artifacts gc --dry-run", "ethosu-artifacts gc --artifact digits_cnn/v1"],
    "summarize": ["ethosu-artifacts summarize outputs/sweeps/2026-11-28/12-00-00"],
    "track": ["ethosu-artifacts track digits_cnn --uri http://127.0.0.1:5000"],
}


def _command(sub, name: str, func, help: str):
    examples = "\n".join(f"  {e}" for e in _EXAMPLES[name])
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"examples:\n{examples}\n\n{_EXIT}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
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
    p = _command(sub, "ls", cmd_ls, "list artifacts, newest first, with the figures people compare")
    p.add_argument("name", nargs="?", help="only this artifact name")
    p.add_argument("--target", help="only this accelerator, e.g. ethos-u55-128")
    p.add_argument("--scheme", help="only this global scheme, e.g. int8")
    p.add_argument(
        "--check",
        action="store_true",
        help="check every version's files, signature and place (exit 1 on anything untrusted)",
    )
    p.add_argument("--json", action="store_true", help="every field, for scripts")
    p = _command(sub, "show", cmd_show, "one artifact's report.md (tables in a terminal, markdown elsewhere)")
    p.add_argument("id", metavar="ID", help=_ID)
    p.add_argument("--json", action="store_true", help="print the manifest")
    p = _command(
        sub, "diff", cmd_diff, "identical, equivalent or different, the first cause and the inputs that changed"
    )
    p.add_argument("a", metavar="A", help=f"{_ID}; or a folder outside the store: another store's version, an export")
    p.add_argument("b", metavar="B", help="as A")
    p.add_argument("--json", action="store_true", help="the verdict and every difference, for scripts")
    p = _command(
        sub,
        "verify",
        cmd_verify,
        "rebuild in a temporary store and compare model.pte byte for byte (exit 0 MATCH, 1 DIFFERS); only a "
        "trusted artifact's own config.yaml is built",
    )
    p.add_argument("id", nargs="?", metavar="ID", help=_ID)
    p.add_argument(
        "--recipe",
        metavar="RECIPE",
        help="build this recipe and compare with ID, or with the recipe's newest artifact; the way to check an "
        "artifact your key did not sign (its own config.yaml is never run)",
    )
    p.add_argument("--searchpath", metavar="DIR", help="a folder with your own config groups (as hydra.searchpath)")
    p = _command(
        sub, "lock", cmd_lock, "pin a recipe's tool versions and input fingerprints in RECIPE.lock.json beside it"
    )
    p.add_argument("recipe", metavar="RECIPE", help="a recipe of yours (recipe/RECIPE.yaml on the search path)")
    p.add_argument("--searchpath", metavar="DIR", help="a folder with your own config groups (as hydra.searchpath)")
    p = _command(
        sub, "export", cmd_export, "copy an artifact whole into DIR (--firmware: and the C headers a firmware needs)"
    )
    p.add_argument("id", metavar="ID", help=_ID)
    p.add_argument("dir", metavar="DIR", help="a new or empty folder outside the store")
    p.add_argument(
        "--firmware",
        action="store_true",
        help="also write model_pte.h, model_io.h, memory.h, selected_ops.txt and model.bpte (docs/deploying.md)",
    )
    p.add_argument(
        "--section", default=DEFAULT_SECTION, help=f"linker section of model_pte (default {DEFAULT_SECTION})"
    )
    p.add_argument(
        "--bundle-samples",
        type=int,
        default=DEFAULT_BUNDLE_SAMPLES,
        help=f"test cases in model.bpte (default {DEFAULT_BUNDLE_SAMPLES})",
    )
    p.add_argument("--force", action="store_true", help="write into a DIR that is not empty")
    p = _command(sub, "gc", cmd_gc, "remove cache entries no artifact or running build needs, and debris")
    p.add_argument("--artifact", metavar="ID", action="append", help="also remove this version (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    p = _command(sub, "summarize", cmd_summarize, "write summary.csv, summary.md and pareto.png of a sweep dir")
    p.add_argument("dir", metavar="SWEEP_DIR", help="the sweep dir (hydra.sweep.dir), also of a killed sweep")
    p.add_argument("--json", action="store_true", help="print the rows")
    p = _command(sub, "track", cmd_track, "log stored artifacts to MLflow (backfill a store built without tracking)")
    p.add_argument("ids", nargs="+", metavar="ID", help=_ID)
    p.add_argument("--uri", default=None, help="tracking URI; default: the embedded store under --root")
    p.add_argument("--experiment", default=None, help="MLflow experiment; default: each artifact's name")
    p.add_argument("--no-model", action="store_true", help="do not upload model.pte")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)  # argparse itself exits 2 naming a bad argument
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # removed under the command
        sys.exit(report(PROG, UsageError(ConfigIssue("working folder", run_dirs.GONE))))
    # As in ethosu-build: a repo's own model code imports from the folder we run in, for the
    # commands that build or compose (the others import no user code, and a store folder one
    # runs in may hold planted modules).
    if args.command in ("verify", "lock") and cwd not in sys.path:
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
        if args.command not in ("summarize", "lock"):  # they read no store
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
    cannot be written (read-only, no permission) is the user's to fix (exit 2)."""
    if exc.errno in IO_ERRNOS:
        return io_failure(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = f"{exc.filename or args.root!r} cannot be read or written ({exc.strerror})"
        return UsageError(
            ConfigIssue("DIR" if args.command == "export" else "--root", f"{what}; accepted: a folder you can use")
        )
    return exc


if __name__ == "__main__":
    main()
