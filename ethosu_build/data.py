"""Calibration and evaluation sources.

A source is any callable named by `dataset._target_` that returns a sized, indexable
dataset whose items are an input tensor (or array), or an `(input, label)` pair. Inputs are
one sample without the batch dimension (a leading 1 is also accepted). Built-in sources:

- `random`   seeded uniform noise shaped like `model.input_shape`
- `digits`   scikit-learn's 8x8 digits, a fixed train/test split
- `tensors`  a `.pt` or `.npz` file holding inputs (and optionally labels)
- `folder`   one `.npy`/`.pt` file per sample, optionally labelled by sub-folder name

The module imports numpy/torch only inside functions: `fingerprint()` and `static_issues()`
run during validation and the up-to-date check, before any heavy import.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import ConfigIssue
from .fingerprint import canonical_json, file_sha256, source_fingerprint, tool_version

TENSOR_SUFFIXES = (".pt", ".npz")
SAMPLE_SUFFIXES = (".npy", ".pt")
# Sources whose output also depends on another package's data.
_DATA_PACKAGES = {"ethosu_build.data.digits": "scikit-learn"}


# --- built-in sources ---------------------------------------------------------------------


class _Random:
    def __init__(self, shape: Sequence[int], seed: int, size: int, low: float, high: float):
        import torch

        gen = torch.Generator().manual_seed(int(seed))
        sample_shape = list(shape)[1:] if len(shape) > 1 and shape[0] == 1 else list(shape)
        self.x = torch.rand([int(size)] + sample_shape, generator=gen) * (high - low) + low

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i]


def random(shape: Sequence[int], seed: int = 0, size: int = 1024, low: float = -1.0, high: float = 1.0):
    """`size` samples of uniform noise in [low, high), reproducible from `seed`."""
    return _Random(shape, seed, size, low, high)


class _Arrays:
    """Inputs (N, ...) and optional labels (N,) held in memory."""

    def __init__(self, x, y=None):
        import torch

        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.y = None if y is None else torch.as_tensor(y, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i] if self.y is None else (self.x[i], self.y[i])


# 1797 digits; a fixed permutation splits them 1437 train / 360 test.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360


def digits(split: str = "train"):
    """scikit-learn's digits as (1, 8, 8) float images in [0, 1] with their labels."""
    import numpy as np
    from sklearn.datasets import load_digits

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    d = load_digits()
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(d.target))
    if split == "train":
        order = order[DIGITS_TEST_SIZE:]
    elif split == "test":
        order = order[:DIGITS_TEST_SIZE]
    x = (d.images[order] / 16.0).astype("float32")[:, None, :, :]
    return _Arrays(x, d.target[order])


def tensors(path: str, inputs_key: str = "inputs", labels_key: Optional[str] = "labels"):
    """A `.pt` (tensor, or dict of tensors) or `.npz` file with inputs and optional labels."""
    p = Path(path)
    if p.suffix == ".npz":
        import numpy as np

        with np.load(p, allow_pickle=False) as data:
            x = data[inputs_key]
            y = data[labels_key] if labels_key and labels_key in data.files else None
    else:
        import torch

        obj = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            x, y = obj[inputs_key], obj.get(labels_key) if labels_key else None
        else:
            x, y = obj, None
    return _Arrays(x, y)


def _folder_files(path: Path, pattern: str) -> list[Path]:
    return sorted(f for f in path.rglob(pattern) if f.is_file() and f.suffix in SAMPLE_SUFFIXES)


def folder(path: str, pattern: str = "*", labels_from_subfolders: bool = False):
    """One sample per `.npy`/`.pt` file (sorted by path). With `labels_from_subfolders`,
    `path/<int label>/<file>` gives the label."""
    import numpy as np
    import torch

    files = _folder_files(Path(path), pattern)
    xs = [
        torch.as_tensor(np.load(f)) if f.suffix == ".npy" else torch.load(f, weights_only=True)
        for f in files
    ]
    ys = [int(f.parent.name) for f in files] if labels_from_subfolders else None
    return _Arrays(torch.stack([x.float() for x in xs]), ys)


# --- checks and fingerprints without heavy imports -------------------------------------------


def static_issues(key: str, dataset: dict[str, Any]) -> list[ConfigIssue]:
    """Problems visible without loading anything: a missing `_target_` or input file."""
    issues = []
    target = dataset.get("_target_")
    if not isinstance(target, str) or not target:
        issues.append(ConfigIssue(f"{key}._target_", f"missing; give a callable such as ethosu_build.data.digits (got {target!r})"))
        return issues
    path = dataset.get("path")
    if path is None:
        return issues
    if path == "???":
        issues.append(ConfigIssue(f"{key}.path", f"missing; give a file or folder, e.g. {key}.path=data/samples.npz"))
        return issues
    p = Path(str(path))
    if target.endswith("data.tensors"):
        if not p.is_file():
            issues.append(ConfigIssue(f"{key}.path", f"tensors file {str(path)!r} does not exist; accepted: an existing {' or '.join(TENSOR_SUFFIXES)} file"))
        elif p.suffix not in TENSOR_SUFFIXES:
            issues.append(ConfigIssue(f"{key}.path", f"{str(path)!r} is not a tensors file; accepted suffixes: {', '.join(TENSOR_SUFFIXES)}"))
    elif target.endswith("data.folder"):
        if not p.is_dir():
            issues.append(ConfigIssue(f"{key}.path", f"folder {str(path)!r} does not exist; accepted: an existing folder of {'/'.join(SAMPLE_SUFFIXES)} files"))
        elif not _folder_files(p, str(dataset.get("pattern", "*"))):
            issues.append(ConfigIssue(f"{key}.path", f"folder {str(path)!r} holds no {'/'.join(SAMPLE_SUFFIXES)} sample files"))
    elif not p.exists():
        issues.append(ConfigIssue(f"{key}.path", f"{str(path)!r} does not exist"))
    return issues


def fingerprint(dataset: dict[str, Any]) -> str:
    """sha256 over what determines the samples: the source's config and code, the files it
    reads (by content) and, for packaged data, the package version."""
    target = str(dataset.get("_target_"))
    parts: dict[str, Any] = {"config": dataset, "source": source_fingerprint(target)}
    path = dataset.get("path")
    if path is not None:
        p = Path(str(path))
        if p.is_file():
            parts["files"] = file_sha256(p)
        elif p.is_dir():
            files = _folder_files(p, str(dataset.get("pattern", "*")))
            parts["files"] = {str(f.relative_to(p)): file_sha256(f) for f in files}
    if target in _DATA_PACKAGES:
        parts["package"] = tool_version(_DATA_PACKAGES[target])
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


# --- loading ------------------------------------------------------------------------------------


@dataclass
class Samples:
    x: Any  # torch.Tensor (N, *input_shape[1:])
    y: Optional[Any]  # torch.Tensor (N,) of labels, or None

    def __len__(self) -> int:
        return len(self.x)


def instantiate(dataset: dict[str, Any]):
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(dataset, _convert_="all")


def take(ds, num_samples: int, input_shape: Sequence[int]) -> Samples:
    """The first `num_samples` items, stacked, each shaped like one model input."""
    import torch

    xs, ys = [], []
    for i in range(num_samples):
        item = ds[i]
        if isinstance(item, (tuple, list)):
            x, y = item[0], item[1] if len(item) > 1 else None
        else:
            x, y = item, None
        x = torch.as_tensor(x, dtype=torch.float32)
        if list(x.shape) == list(input_shape):
            x = x[0]  # given with the leading batch dimension of 1
        xs.append(x)
        ys.append(y)
    labelled = all(y is not None for y in ys)
    return Samples(torch.stack(xs), torch.as_tensor([int(y) for y in ys]) if labelled else None)
