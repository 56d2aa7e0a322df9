"""ethosu-search's outputs: search.json, search.md, sensitivity.csv, points.csv, front.png
and sensitivity.png in the run dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import atomic_write, csv_text, format_cell, markdown_table
from .points import Point


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if rows:  # rows that were built have more columns: csv_text takes every key
        atomic_write(path, csv_text(rows))


def _fmt(v: Any) -> str:
    return format_cell(v)


def markdown(r: dict[str, Any]) -> str:
    sensitivity = [
        [s["module"], s["layers"], s["sqnr_db"], s["sqnr_gain_db"], s["top1"],
         f"{_fmt(s['delta_cycles'])}{'' if s['cost_measured'] else ' (partly unmatched)'}", s["status"]]
        for s in sorted(r["sensitivity"], key=lambda s: -(s["sqnr_gain_db"] or -1e9))
    ]  # fmt: skip
    built = [(f"mixed {i}" + (" (front)" if p.get("on_front") else ""), p) for i, p in enumerate(r["front"], 1)]
    points = [
        [label, row["modules"], row["sqnr_db"], row["top1"], row.get("cycles"), row["est_cycles"], row.get("sram_kib"),
         row.get("recipe") or row.get("error") or "-"]
        for label, row in [("uniform base", r["uniform_base"]), ("uniform " + r["scheme"], r["uniform_all"])] + built
    ]  # fmt: skip
    out = [
        f"# Mixed-precision search ({r['scheme']})",
        "",
        f"`{r['command']}`",
        "",
        f"{len(r['candidates'])} candidates, {r['points_measured']} configurations measured (calibration + PyTorch), "
        f"{r['lowerings']} full builds (lowering + Vela).",
        "",
        "## Sensitivity (one module at a time)",
        "",
        markdown_table(["module", "layers", "SQNR dB", "gain dB", "top-1", "Δ cycles", "status"], sensitivity),
        "",
        "## Built points",
        "",
        markdown_table(
            ["configuration", "modules", "SQNR dB", "top-1", "cycles (Vela)", "estimated", "SRAM KiB", "recipe"], points
        ),
    ]
    q = r["quick_answer"]
    if q is None:
        answer = "no goal given, or none met"
    else:
        cost = (
            f"{_fmt(q['cycles'])} Vela cycles"
            if q.get("cycles") is not None
            else f"an estimated {_fmt(q['est_cycles'])} cycles"
        )
        answer = (
            f"{q['modules'] if q['n'] else 'no module (the uniform base)'}: SQNR {_fmt(q['sqnr_db'])} dB, top-1 "
            f"{_fmt(q['top1'])} "
            f"(float {_fmt(r['float_top1'])}), {cost} against {_fmt(r['uniform_all'].get('cycles'))} for uniform "
            f"{r['scheme']}."
        )
    out += ["", "## Quick answer", "", answer]
    return "\n".join(out) + "\n"


def plot_front(path: Path, points: list[Point], built: list[Point], reference: Point, top: Point) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ok = [p for p in points if p.status == "ok" and p.est_cycles is not None and p.sqnr_db is not None]
    ax.scatter([p.est_cycles for p in ok], [p.sqnr_db for p in ok], s=14, c="0.7", label="measured (estimated cycles)")
    for p, style, label in [(reference, "s", "uniform base"), (top, "^", "uniform all")]:
        if p.built.get("cycles") is not None and p.sqnr_db is not None:
            ax.scatter([p.built["cycles"]], [p.sqnr_db], marker=style, s=60, label=label)
    real = [p for p in built if p.built.get("cycles") is not None]
    front = sorted((p for p in real if p.built.get("on_front")), key=lambda p: p.built["cycles"])
    if front:
        ax.plot(
            [p.built["cycles"] for p in front],
            [p.sqnr_db for p in front],
            "o-",
            c="C3",
            label="front, built (Vela cycles)",
        )
    others = [p for p in real if not p.built.get("on_front")]
    if others:
        ax.scatter(
            [p.built["cycles"] for p in others],
            [p.sqnr_db for p in others],
            s=40,
            facecolors="none",
            edgecolors="C3",
            label="built, dominated once built",
        )
    ax.set_xlabel("NPU cycles")
    ax.set_ylabel("SQNR vs float (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_sensitivity(path: Path, sens: list[dict[str, Any]], scheme: str) -> None:
    """Per module: SQNR gain of that module alone at `scheme`, and its Vela cycle cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in sens if r["sqnr_gain_db"] is not None), key=lambda r: -r["sqnr_gain_db"])
    if not rows:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 0.35 * len(rows) + 1.5), sharey=True)
    names = [r["module"] for r in rows]
    a.barh(names, [r["sqnr_gain_db"] for r in rows], color="C0")
    a.set_xlabel(f"SQNR gain with {scheme} (dB)")
    b.barh(names, [r["delta_cycles"] for r in rows], color="C1")
    b.set_xlabel("extra Vela cycles")
    a.invert_yaxis()
    for ax in (a, b):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
