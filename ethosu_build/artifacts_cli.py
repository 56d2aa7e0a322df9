"""`ethosu-artifacts`: list and inspect the artifact store. Reads JSON only: no torch import.

    ethosu-artifacts [--root outputs] ls [NAME] [--target T] [--scheme S]
    ethosu-artifacts [--root outputs] show ID|PATH [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
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
    rows = []
    for a in store.all():
        if args.name and a.name != args.name:
            continue
        try:
            row = _row(a, a.manifest())
        except (OSError, ValueError) as exc:
            print(f"warning: {a.id}: unreadable manifest ({exc})", file=sys.stderr)
            continue
        if args.target and row["target"] != args.target:
            continue
        if args.scheme and row["scheme"] != args.scheme:
            continue
        rows.append(row)
    rows.sort(key=lambda r: r["created"], reverse=True)  # newest first
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    table = Table(title=f"artifacts in {store.dir}", title_justify="left")
    for col in ("id", "created", "target", "scheme", "overrides", "npu_partitions", "cpu_ops", "pte_bytes"):
        table.add_column(col.replace("_", " "), justify="right" if col in ("overrides", "npu_partitions", "cpu_ops", "pte_bytes") else "left")
    for r in rows:
        table.add_row(*(str(r[c]) for c in ("id", "created", "target", "scheme", "overrides", "npu_partitions", "cpu_ops", "pte_bytes")))
    Console().print(table if rows else f"no artifacts in {store.dir}")
    return 0


def cmd_show(store: ArtifactStore, args) -> int:
    try:
        a = store.resolve(args.id)
    except KeyError:
        names = sorted({x.id for x in store.all()})
        print(f"ethosu-artifacts: no artifact {args.id!r} in {store.dir}; known: {', '.join(names) or 'none'}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(a.manifest(), indent=1))
        return 0
    from rich.markdown import Markdown

    from .report import render
    from .store import REPORT

    text = (a.path / REPORT).read_text() if (a.path / REPORT).is_file() else render(a.manifest(), a.path / "vela")
    Console().print(Markdown(text))
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ethosu-artifacts", description="List and inspect ethosu-build artifacts.")
    parser.add_argument("--root", default="outputs", help="store root (store.root of the builds); default: outputs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ls", help="list artifacts, newest first")
    p.add_argument("name", nargs="?", help="only this artifact name")
    p.add_argument("--target", help="only this accelerator, e.g. ethos-u55-128")
    p.add_argument("--scheme", help="only this global scheme, e.g. int8")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("show", help="one artifact's manifest as tables")
    p.add_argument("id", help="NAME/vN, NAME (newest version) or a version folder")
    p.add_argument("--json", action="store_true", help="print the manifest")
    p.set_defaults(func=cmd_show)
    args = parser.parse_args(argv)
    sys.exit(args.func(ArtifactStore(args.root), args))


if __name__ == "__main__":
    main()
