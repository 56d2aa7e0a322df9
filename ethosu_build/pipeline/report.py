"""report.md: one artifact in human terms. `ethosu-artifacts show` renders the same Markdown
in the terminal, so there is one description of an artifact, not two.

The summary table is here; each stage renders its own sections (Stage.report, next to the
stage), in pipeline order, and the budgets close it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..files import markdown_table
from . import budgets
from .stages import STAGES


def _lowering(low: dict[str, Any] | None) -> str:
    if not low:  # an artifact from before the lowering options
        return "nchw IO"
    names = sorted({r["rewrite"] for r in low["rewrites"]})
    text = f"{low['io_layout']} IO" + (f"; rewrites: {', '.join(names)} ({len(low['rewrites'])} ops)" if names else "")
    unmatched = low.get("unmatched") or []
    return text + (f"; found nothing to rewrite: {', '.join(unmatched)}" if unmatched else "")


def render(m: dict[str, Any], vela_dir: Path) -> str:
    out = _summary(m)
    for stage in STAGES:
        out += stage.report(m, vela_dir)
    out += budgets.report_section(m.get("budget"))
    return "\n".join(out) + "\n"


def _memory_mode(m: dict[str, Any]) -> str:
    """The memory mode built for: the config's, or the one a board's auto kept."""
    mode = m["config"]["target"]["memory_mode"]
    board = m.get("board")
    return f"{board['memory_mode']}, chosen by auto" if board and mode == "auto" else (mode or "-")


def _board(fit: dict[str, Any]) -> str:
    return f"{fit['board']}: " + ("fits" if fit["fits"] else f"does not fit ({fit['over']:,} B over)")


def _summary(m: dict[str, Any]) -> list[str]:
    cfg, q, d = m["config"], m["quantization"], m["delegation"]
    t = cfg["target"]
    out = [f"# {m['name']}/v{m['version']}", ""]
    if not d["npu_partitions"]:
        out += [
            f"> **Nothing runs on the NPU**: the partitioner delegated no operator; all {d['cpu_op_count']} ops run "
            "on the CPU (see Delegation for its reasons).",
            "",
        ]
    pte = m["files"]["model.pte"]
    scheme = f"{q['scheme']}, {'per-channel' if q['per_channel'] else 'per-tensor'} weights" + (
        f", {q['io']} IO" if q["io"] else ""
    )
    rows = [
        ["model", f"{cfg['model']['name']} {_inputs(cfg['model'])}"],
        ["target", f"{t['accelerator']} ({t['system_config']}, {_memory_mode(m)})"],
        *([["board", _board(m["board"])]] if m.get("board") else []),
        ["quantization", scheme],
        ["lowering", _lowering(m.get("lowering"))],
        ["recipe", m.get("recipe")],
        ["build key", f"`{m['build_key'][:16]}`"],
        ["model.pte", f"{pte['size']} bytes, sha256 `{pte['sha256'][:16]}`"],
        ["created", m["created"]],
    ]
    out.append(markdown_table(["", ""], rows))
    return out


def _inputs(model: dict[str, Any]) -> str:
    inputs = model.get("inputs") or []
    if not inputs:
        return str(model.get("input_shape"))
    return ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in inputs)
