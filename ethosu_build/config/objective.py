"""What an optimizing sweep optimizes: `objective`, manifest metrics with a direction each
(docs/sweeps.md, "Optimizing sweeps"), and the budgets as constraints.

`objective: {inference_ms: min, sqnr_db: max}` (or the list form `[{inference_ms: min}, ...]`)
makes the task function return those values, in that order, so any Hydra sweeper that
optimizes can drive ethosu-build. A budget breach is a measured, infeasible point: its
violations say by how much (`violations`). Nothing here imports anything heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigIssue, did_you_mean

DIRECTIONS = ("min", "max")


def _get(m: dict[str, Any], *path: str) -> Any:
    node: Any = m
    for p in path:
        node = node.get(p) if isinstance(node, dict) else None
    return node


def _kib(n: Any) -> float | None:
    return None if n is None else round(float(n) / 1024, 3)


@dataclass(frozen=True)
class Metric:
    read: Callable[[dict[str, Any]], Any]  # from a manifest (or a breached build's measurements)
    better: str  # the usual direction, for the docs
    what: str


def board_headroom_kib(m: dict[str, Any]) -> float | None:
    """A board build's least headroom (KiB) over the regions it placed pools in; minus the
    bytes over where it does not fit (pipeline/placement.py); None without a board."""
    fit = m.get("board")
    if not fit:
        return None
    if not fit["fits"]:
        return _kib(-fit["over"])
    return _kib(min((r["headroom"] for r in fit["regions"] if r["pools"]), default=0))


# name -> where it is in the manifest. sram_kib/flash_kib are the memory bill's regions, as the
# budgets judge them; vela_sram_kib is Vela's own SRAM figure for its partitions.
METRICS: dict[str, Metric] = {
    "cycles": Metric(lambda m: _get(m, "metrics", "vela", "total", "cycles"), "min", "Vela's NPU cycles"),
    "inference_ms": Metric(
        lambda m: _get(m, "board", "cpu", "total_ms") or _get(m, "metrics", "vela", "total", "inference_ms"),
        "min",
        "Vela's inference time at its clock; on a board, plus the CPU's estimate (docs/boards.md)",
    ),
    "cpu_ms": Metric(lambda m: _get(m, "board", "cpu", "cpu_ms"), "min", "the board CPU's estimated time (board=NAME)"),
    "sram_kib": Metric(lambda m: _kib(_get(m, "memory", "regions", "sram") or 0), "min", "the memory bill's SRAM"),
    "flash_kib": Metric(lambda m: _kib(_get(m, "memory", "regions", "flash") or 0), "min", "the memory bill's flash"),
    "dram_kib": Metric(lambda m: _kib(_get(m, "memory", "regions", "dram") or 0), "min", "the memory bill's DRAM"),
    "planned_kib": Metric(
        lambda m: _kib(_get(m, "memory", "parts", "planned", "bytes")), "min", "ExecuTorch's planned buffers"
    ),
    "pte_kib": Metric(lambda m: _kib(_get(m, "files", "model.pte", "size")), "min", "the size of model.pte"),
    "vela_sram_kib": Metric(lambda m: _get(m, "metrics", "vela", "total", "sram_kib"), "min", "Vela's SRAM figure"),
    "cpu_ops": Metric(lambda m: _get(m, "delegation", "cpu_compute_op_count"), "min", "compute ops left on the CPU"),
    "sqnr_db": Metric(lambda m: _get(m, "metrics", "accuracy", "sqnr_db"), "max", "SQNR of quantized vs float"),
    "cosine": Metric(lambda m: _get(m, "metrics", "accuracy", "cosine"), "max", "cosine of quantized vs float"),
    "quantized_top1": Metric(
        lambda m: _get(m, "metrics", "accuracy", "quantized_top1"), "max", "top-1 % of the quantized model (labels)"
    ),
    "accuracy_drop": Metric(
        lambda m: _get(m, "metrics", "accuracy", "accuracy_drop"), "min", "float minus quantized top-1 (labels)"
    ),
    "headroom_kib": Metric(board_headroom_kib, "max", "a board's least headroom in a region it uses (board=NAME)"),
    "tosa_max_lsb": Metric(
        lambda m: _get(m, "metrics", "tosa_check", "max_lsb_diff"), "min", "TOSA check's largest output difference"
    ),
}


def parse(value: Any, key: str = "objective") -> tuple[list[tuple[str, str]], list[ConfigIssue]]:
    """[(metric, direction)] from `{name: dir, ...}` or `[{name: dir}, ...]`, and every problem."""
    if value is None:
        return [], []
    accepted = "a mapping of metric: min|max, e.g. {inference_ms: min, sqnr_db: max}"
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(v, dict) and len(v) == 1 for v in value):
        items = [next(iter(v.items())) for v in value]
    else:
        return [], [ConfigIssue(key, f"{value!r} is not an objective; accepted: {accepted}")]
    pairs, issues = [], []
    for name, direction in items:
        name = str(name)
        if name not in METRICS:
            hint = did_you_mean(name, list(METRICS)) or f"; accepted: {', '.join(METRICS)}"
            issues.append(ConfigIssue(f"{key}.{name}", f"is not a metric{hint}"))
        elif direction not in DIRECTIONS:
            issues.append(ConfigIssue(f"{key}.{name}", f"{direction!r} is not a direction; accepted: min or max"))
        elif name in (p[0] for p in pairs):
            issues.append(ConfigIssue(f"{key}.{name}", "is given twice; accepted: each metric once"))
        else:
            pairs.append((name, direction))
    if not items:
        issues.append(ConfigIssue(key, f"is empty; accepted: null or {accepted}"))
    return pairs, issues


def values(measured: dict[str, Any], pairs: list[tuple[str, str]]) -> list[float | None]:
    """The objective's values from a manifest (or the measurements of a breached build)."""
    out = []
    for name, _ in pairs:
        v = METRICS[name].read(measured)
        out.append(None if v is None else float(v))
    return out


def row_metrics(measured: dict[str, Any]) -> dict[str, Any]:
    """Every metric of the table, for a sweep's result row."""
    return {name: metric.read(measured) for name, metric in METRICS.items()}


def violations(gates) -> dict[str, float]:
    """Per budget, (measured - limit) / limit from (name, limit, measured) triples: > 0 is a
    breach (an infeasible point), <= 0 the margin left."""
    return {name: (measured - limit) / max(abs(limit), 1e-9) for name, limit, measured in gates}
