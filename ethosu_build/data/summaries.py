"""What the samples a stage saw held: their `summary` in the manifest, and `range_warnings`
when the evaluation data lies far from the calibration data."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .sampling import Samples


def summary(samples: Samples, specs: Sequence[Any]) -> dict[str, Any]:
    """What a stage saw: the number of samples, per input its value range and mean, and for
    labelled data the count of each class in the draw."""
    inputs = []
    for x, spec in zip(samples.x, specs):
        v = x.double()
        inputs.append(
            {"name": spec.name, "min": float(v.min()), "max": float(v.max()), "mean": round(float(v.mean()), 6)}
        )
    labels = None
    if samples.y is not None:
        counts: dict[int, int] = {}
        for label in samples.y.tolist():
            counts[label] = counts.get(label, 0) + 1
        names = samples.classes or []
        labels = {(names[k] if 0 <= k < len(names) else str(k)): counts[k] for k in sorted(counts)}
    return {"samples": len(samples), "inputs": inputs, "classes": labels}


# How far the evaluation ranges may lie from the calibration ranges before the report warns:
# a share of the calibration range's width, on either end.
RANGE_TOLERANCE = 0.25


def range_warnings(calibration: dict[str, Any] | None, evaluation: dict[str, Any] | None) -> list[str]:
    """Inputs whose evaluation range ends more than RANGE_TOLERANCE of the calibration range's
    width away from it: the input quantizer was fitted to other data (evaluation values
    beyond it clip; a much narrower evaluation range uses few of its levels)."""
    if not calibration or not evaluation:
        return []
    found = []
    for cal, ev in zip(calibration["inputs"], evaluation["inputs"]):
        width = cal["max"] - cal["min"]
        margin = RANGE_TOLERANCE * width if width > 0 else 0.0
        if abs(ev["min"] - cal["min"]) > margin or abs(ev["max"] - cal["max"]) > margin:
            found.append(
                f"input {cal['name']!r}: evaluation values span [{ev['min']:.4g}, {ev['max']:.4g}], calibration "
                f"[{cal['min']:.4g}, {cal['max']:.4g}]: the two data sets differ (another preprocessing?), and the "
                "input's quantization range was fitted to the calibration set"
            )
    return found
