"""`ethosu-artifacts ls`: the store's versions, newest first, with the figures people compare;
`--check` also hashes every file and lists the store's debris. Reads files only: rich is
imported when the table is printed, nothing heavier."""

from __future__ import annotations

import json
import sys
from typing import Any

from ..config import objective
from ..config.schema import NAME
from ..errors import EXIT_NOT_ALL_WELL, EXIT_OK, ConfigIssue, UsageError
from ..files import printable
from ..store.artifacts import Artifact, ArtifactStore, check
from .common import Command, _console


def run(store: ArtifactStore, args) -> int:
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
    return EXIT_NOT_ALL_WELL if damaged else EXIT_OK


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


def _arguments(p) -> None:
    p.add_argument("name", nargs="?", help="only this artifact name")
    p.add_argument("--target", help="only this accelerator, e.g. ethos-u55-128")
    p.add_argument("--scheme", help="only this global scheme, e.g. int8")
    p.add_argument(
        "--check",
        action="store_true",
        help="check every version's files, signature and place (exit 1 on anything untrusted)",
    )
    p.add_argument("--json", action="store_true", help="every field, for scripts")


COMMAND = Command(
    "ls",
    "list artifacts, newest first, with the figures people compare",
    (
        "ethosu-artifacts ls",
        "ethosu-artifacts ls digits_cnn --target ethos-u55-128",
        "ethosu-artifacts ls --check",
    ),
    _arguments,
    run,
)
