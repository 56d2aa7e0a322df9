"""Build gates: a build that breaks a budget is not stored (BudgetBreached, exit code 3)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config.schema import BudgetConfig
from ..errors import BudgetBreached, ConfigError, ConfigIssue
from ..files import markdown_table
from .memory import kib


def measured(
    delegation: dict[str, Any], vela: dict[str, Any], accuracy: dict[str, Any], memory: dict[str, Any]
) -> dict[str, tuple[Any, str]]:
    """The value each budget is judged on, and its unit. SRAM and flash judge the whole
    memory bill in that region for the target's memory mode (pipeline/memory.py): the same
    figures as the objective's and a sweep summary's sram_kib and flash_kib."""
    total, regions = vela["total"], memory["regions"]
    return {
        # Boundary (de)quantize kernels are the program's IO, present in every build; the
        # budget counts the operators that fell back to the CPU.
        "max_cpu_ops": (delegation["cpu_compute_op_count"], "CPU compute ops"),
        "max_sram_kib": (kib(regions.get("sram", 0)), "KiB SRAM"),
        "max_flash_kib": (kib(regions.get("flash", 0)), "KiB flash"),
        "max_planned_kib": (kib(memory["parts"]["planned"]["bytes"]), "KiB planned buffers"),
        "max_accuracy_drop": (accuracy["accuracy_drop"], "accuracy points"),
        "max_inference_ms": (total["inference_ms"], "ms"),
    }


def judged(name: str, memory: dict[str, Any]) -> str | None:
    """What a memory budget's figure is made of, for its message: the memory bill's parts in
    that region under the build's memory mode (a U65's Dedicated_Sram counts its configured
    fast scratch; Sram_Only places the program in SRAM, so its flash is 0)."""
    region = {"max_sram_kib": "sram", "max_flash_kib": "flash"}.get(name)
    if region is None:
        return None
    parts = [
        f"{part} {kib(p['bytes']):g} KiB" + (" configured" if p.get("how") == "configured" else "")
        for part, p in (memory.get("parts") or {}).items()
        if p.get("region") == region and p.get("bytes")
    ]
    return f"the memory bill's {region.upper()} in {memory.get('memory_mode')}: " + (", ".join(parts) or "nothing")


def check(
    budget: BudgetConfig,
    delegation: dict[str, Any],
    vela: dict[str, Any],
    accuracy: dict[str, Any],
    memory: dict[str, Any],
    measured_as_manifest: dict[str, Any] | None = None,
    board: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per budget: limit, measured value and whether it passed; raises BudgetBreached, which
    carries `measured_as_manifest` (what the build measured, for a sweep's record). With a
    board, a program that does not fit its regions (placement.py) is a breach too."""
    values = measured(delegation, vela, accuracy, memory)
    results, breaches = {}, []
    if board is not None:  # judged as bytes over the board's regions, limit 0
        unit = f"B over {board['board']}'s regions"
        results["board_fit"] = {"limit": 0, "measured": board["over"], "unit": unit, "passed": board["fits"]}
        if not board["fits"]:
            breaches.append({"budget": "board_fit", "limit": 0, "measured": board["over"], "unit": unit,
                             "message": fit_breach(board)})  # fmt: skip
    for f in dataclasses.fields(budget):
        limit = getattr(budget, f.name)
        if limit is None:
            continue
        value, unit = values[f.name]
        if value is None:
            raise ConfigError(
                ConfigIssue(
                    f"budget.{f.name}",
                    f"{limit!r} cannot be judged: the evaluation data has no labels; accepted: null, or labelled "
                    "evaluation data",
                )
            )
        ok = value <= limit
        results[f.name] = {"limit": limit, "measured": value, "unit": unit, "passed": ok}
        if not ok:
            breaches.append({"budget": f.name, "limit": limit, "measured": value, "unit": unit,
                             "judged": judged(f.name, memory)})  # fmt: skip
    if breaches:
        raise BudgetBreached(breaches, measured_as_manifest)
    return results


def report_section(gates: dict[str, Any] | None) -> list[str]:
    """The budgets in report.md: each gate, its limit and what the build measured."""
    if not gates:
        return []
    return [
        "",
        "## Budgets",
        "",
        markdown_table(
            ["budget", "limit", "measured", "unit", "passed"],
            [[k, g["limit"], g["measured"], g["unit"], g["passed"]] for k, g in gates.items()],
        ),
    ]


def fit_breach(fit: dict[str, Any]) -> str:
    """Why the program does not fit the board, and what would make it fit."""
    tried = fit.get("tried")
    if tried:
        why = "; ".join(f"{t['memory_mode']}: {' / '.join(t['problems'])}" for t in tried)
        hint = "a smaller program, a board with more memory there, or less kept by its firmware (regions.*.reserved)"
        return f"board {fit['board']}: no memory mode fits ({why}); what would fit: {hint}"
    return (
        f"board {fit['board']} ({fit['memory_mode']}): {' / '.join(fit['problems'])}; what would fit: "
        "board.memory_mode=auto tries the board's other memory modes and keeps the fastest that fits"
    )
