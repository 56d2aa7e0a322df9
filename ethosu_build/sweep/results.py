"""What a sweep's files hold, checked before use: a job's `result.json` (summary.py, the
optimizing sweeper) and an optimizing sweep's plan in `sweep.json`. They are read back from
disk, from any folder `ethosu-artifacts summarize` is given, so content not in the shape
ethosu-build writes (it writes both atomically) becomes an unreadable row or no plan, never a
crash.
"""

from __future__ import annotations

from typing import Any

from ..errors import EXIT_FOR_STATUS, OK_STATUSES

STATUSES = (*OK_STATUSES, *EXIT_FOR_STATUS)
# The row's figures: the summary compares and plots them.
NUMBERS = ("cycles", "inference_ms", "sram_kib", "flash_kib", "vela_sram_kib", "npu_partitions", "cpu_ops",
           "float_top1", "quantized_top1", "accuracy_drop", "sqnr_db", "tosa_max_lsb", "seconds")  # fmt: skip


def _number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def row_problem(row: Any) -> str | None:
    """Why a parsed result.json is not a row the summary can use (None: it is)."""
    if not isinstance(row, dict):
        return f"holds a JSON {type(row).__name__}, not an object with a status"
    if row.get("status") not in STATUSES:
        return f"status {row.get('status')!r} is not one of {', '.join(STATUSES)}"
    overrides, values, violations = row.get("overrides"), row.get("objective"), row.get("violations")
    if overrides is not None and not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        return f"overrides {overrides!r} is not a list of strings"
    bad = [k for k in NUMBERS if not _number(row.get(k))]
    if bad:
        return f"{bad[0]} {row[bad[0]]!r} is not a number"
    if values is not None and not (isinstance(values, list) and all(_number(v) for v in values)):
        return f"objective {values!r} is not a list of numbers"
    if violations is not None and not (isinstance(violations, dict) and all(map(_number, violations.values()))):
        return f"violations {violations!r} is not a mapping of numbers"
    return None


def plan_problem(plan: Any) -> str | None:
    """Why `optimize` of a sweep.json is not an optimizing sweep's plan (None: it is)."""
    if not isinstance(plan, dict):
        return f"its optimize entry is a JSON {type(plan).__name__}, not an object"
    pairs, trials = plan.get("objective"), plan.get("trials", [])
    if not (isinstance(pairs, list) and pairs and all(isinstance(p, list) and len(p) == 2 for p in pairs)):
        return f"objective {pairs!r} is not a list of [name, min|max] pairs"
    if not all(isinstance(p[0], str) and p[1] in ("min", "max") for p in pairs):
        return f"objective {pairs!r} is not a list of [name, min|max] pairs"
    if not (isinstance(trials, list) and all(isinstance(t, dict) and "state" in t for t in trials)):
        return "its trials are not a list of objects with a state"
    if not isinstance(plan.get("space", {}), dict):
        return "its space is not an object"
    return None
