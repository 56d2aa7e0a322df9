"""A dataset config's checks without loading anything (config/validate.py calls
`dataset_issues`): how many samples and how they are drawn, the source's `_target_`, its
`path` as the source declares it (sources/), and the `preprocess` steps it is given."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigIssue
from . import preprocess as pre
from .sources import lookup

SEED_MAX = 2**32 - 1  # numpy's RandomState, whose stream is frozen across numpy versions, draws the samples


def dataset_issues(
    key: str,
    dataset: dict[str, Any],
    num_samples: int | None,
    batch_size: int,
    seed: int | None = None,
    checked_preprocess: Any = None,
) -> list[ConfigIssue]:
    """What is wrong with the samples config under `key` (calibration, evaluation,
    quantization.qat): its `num_samples`, `batch_size`, the `seed` of its draw (None: no draw
    or the first items) and its `dataset` (static_issues)."""
    issues = []
    if num_samples is not None and num_samples <= 0:
        issues.append(
            ConfigIssue(
                f"{key}.num_samples",
                f"{num_samples} is not positive; accepted: null (the whole dataset) or 1 up to its size",
            )
        )
    if batch_size <= 0:
        issues.append(ConfigIssue(f"{key}.batch_size", f"{batch_size} is not positive; accepted: an integer >= 1"))
    if seed is not None and not 0 <= seed <= SEED_MAX:
        issues.append(
            ConfigIssue(
                f"{key}.seed", f"{seed} is not a seed; accepted: null (the first num_samples items) or 0..{SEED_MAX}"
            )
        )
    issues.extend(static_issues(f"{key}.dataset", dataset, checked_preprocess))
    return issues


def static_issues(key: str, dataset: dict[str, Any], checked_preprocess: Any = None) -> list[ConfigIssue]:
    """Problems visible without loading anything: a missing `_target_` or input file, and
    the `preprocess` steps a source is given (unless they are `checked_preprocess`,
    model.preprocess, which is checked under its own key)."""
    issues = []
    if "preprocess" in dataset and dataset["preprocess"] != checked_preprocess:
        issues.extend(pre.issues(dataset["preprocess"], f"{key}.preprocess"))
    target = dataset.get("_target_")
    if not isinstance(target, str) or not target:
        issues.append(
            ConfigIssue(
                f"{key}._target_", f"missing; give a callable such as ethosu_build.data.digits (got {target!r})"
            )
        )
        return issues
    path = dataset.get("path")
    if path is None:
        return issues
    if path == "???":
        issues.append(ConfigIssue(f"{key}.path", f"missing; give a file or folder, e.g. {key}.path=data/samples.npz"))
        return issues
    issues.extend(lookup(target).path_issues(f"{key}.path", str(path), dataset))
    return issues
