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
    m = a.manifest()
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    console = Console()
    cfg = m["config"]
    t, q = cfg["target"], cfg["quantization"]
    head = Table(show_header=False, title=f"{a.id}  ({a.path})", title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("created", m["created"])
    head.add_row("recipe", str(m.get("recipe")))
    head.add_row("build key", m["build_key"])
    head.add_row("model", f"{cfg['model']['name']} {cfg['model']['input_shape']}")
    head.add_row("target", f"{t['accelerator']} ({t['system_config']}, {t['memory_mode']})")
    head.add_row("quantization", f"{q['scheme']}{' per-channel' if q['per_channel'] else ' per-tensor'}{', io ' + q['io'] if q['io'] else ''}")
    cal = m["quantization"]["calibration"]
    head.add_row("calibration", f"{cal['samples']} samples in {cal['calls']} call(s) of batch {cal['batch_size']}")
    pte = m["files"]["model.pte"]
    head.add_row("model.pte", f"{pte['size']} bytes, sha256 {pte['sha256']}")
    d = m["delegation"]
    head.add_row("delegation", f"{d['npu_partitions']} NPU partition(s), {d['npu_ops']} NPU op(s), {d['cpu_op_count']} CPU op(s)")
    head.add_row("tools", ", ".join(f"{k} {v}" for k, v in m["tools"].items()))
    console.print(head)
    if m["quantization"]["overrides"]:
        ov = Table(title="overrides (applied in order; a later one wins)", title_justify="left")
        for col in ("name", "selector", "scheme", "ops selected"):
            ov.add_column(col)
        for o in m["quantization"]["overrides"]:
            ov.add_row(o["name"], o["selector"], o["scheme"], str(o["ops_selected"]))
        console.print(ov)
    if d["cpu_op_counts"]:
        cpu = Table(title="ops on the CPU", title_justify="left")
        cpu.add_column("op")
        cpu.add_column("count", justify="right")
        for op, n in sorted(d["cpu_op_counts"].items()):
            cpu.add_row(op, str(n))
        console.print(cpu)
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
