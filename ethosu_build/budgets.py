"""Build gates: a build that breaks a budget is not stored (exit code 3)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .errors import EXIT_BUDGET_BREACHED, ConfigError, ConfigIssue
from .schema import BudgetConfig


class BudgetBreached(Exception):
    exit_code = EXIT_BUDGET_BREACHED

    def __init__(self, breaches: list[dict[str, Any]]):
        self.breaches = breaches
        lines = [f"  - budget.{b['budget']}: measured {b['measured']:g} {b['unit']}, limit {b['limit']:g} {b['unit']}" for b in breaches]
        super().__init__("budget breached, nothing stored:\n" + "\n".join(lines))


def measured(lower_info: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """The value each budget is judged on, and its unit."""
    vela = lower_info["vela"]["total"]
    return {
        # Boundary (de)quantize kernels are the program's IO, present in every build; the
        # budget counts the operators that fell back to the CPU.
        "max_cpu_ops": (lower_info["delegation"]["cpu_compute_op_count"], "CPU compute ops"),
        "max_sram_kib": (vela["sram_kib"], "KiB SRAM"),
        "max_flash_kib": (vela["flash_kib"], "KiB flash"),
        "max_accuracy_drop": (evaluation["accuracy"]["accuracy_drop"], "accuracy points"),
        "max_inference_ms": (vela["inference_ms"], "ms"),
    }


def check(budget: BudgetConfig, lower_info: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    """Per budget: limit, measured value and whether it passed; raises BudgetBreached."""
    values = measured(lower_info, evaluation)
    results, breaches = {}, []
    for f in dataclasses.fields(budget):
        limit = getattr(budget, f.name)
        if limit is None:
            continue
        value, unit = values[f.name]
        if value is None:
            raise ConfigError(ConfigIssue(f"budget.{f.name}", f"{limit!r} cannot be judged: the evaluation data has no labels; accepted: null, or labelled evaluation data"))
        ok = value <= limit
        results[f.name] = {"limit": limit, "measured": value, "unit": unit, "passed": ok}
        if not ok:
            breaches.append({"budget": f.name, "limit": limit, "measured": value, "unit": unit})
    if breaches:
        raise BudgetBreached(breaches)
    return results
