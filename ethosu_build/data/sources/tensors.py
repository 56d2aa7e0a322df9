"""`tensors`: a `.pt` or `.npz` file holding inputs (and optionally labels); `Arrays`, the
in-memory dataset it and `digits` return."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import ConfigIssue

TENSOR_SUFFIXES = (".pt", ".npz")


class Arrays:
    """Inputs (N, ...) and optional labels (N,) held in memory as given: `take` checks and
    converts each item, so complex, string or mis-shaped data is an error, never truncated."""

    def __init__(self, x, y=None):
        # x: the inputs (N, ...), or a tuple of them, one per model input
        self.x = tuple(_tensor_if_numeric(a) for a in x) if isinstance(x, tuple) else _tensor_if_numeric(x)
        self.y = None if y is None else _tensor_if_numeric(y)

    def __len__(self) -> int:
        return len(self.x[0] if isinstance(self.x, tuple) else self.x)

    def __getitem__(self, i: int):
        x = tuple(a[i] for a in self.x) if isinstance(self.x, tuple) else self.x[i]
        return x if self.y is None else (x, self.y[i])


def _tensor_if_numeric(a):
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor):
        return a
    array = np.asarray(a)
    return torch.as_tensor(array) if array.dtype.kind in "biufc" else array


def tensors(path: str, inputs_key: str | Sequence[str] = "inputs", labels_key: str | None = "labels"):
    """A `.pt` (tensor, or dict of tensors) or `.npz` file with inputs and optional labels.
    For a model of several inputs, `inputs_key` lists one key per input, in order."""
    p = Path(path)
    keys = [inputs_key] if isinstance(inputs_key, str) else list(inputs_key)
    if p.suffix == ".npz":
        import numpy as np

        with np.load(p, allow_pickle=False) as data:
            xs = [data[k] for k in keys]
            y = data[labels_key] if labels_key and labels_key in data.files else None
    else:
        import torch

        obj = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            xs, y = [obj[k] for k in keys], obj.get(labels_key) if labels_key else None
        else:
            xs, y = [obj], None
    return Arrays(xs[0] if isinstance(inputs_key, str) else tuple(xs), y)


def path_issues(key: str, path: str, dataset: dict) -> list[ConfigIssue]:
    """`path` must be an existing tensors file."""
    p = Path(path)
    if not p.is_file():
        accepted = f"an existing {' or '.join(TENSOR_SUFFIXES)} file"
        return [ConfigIssue(key, f"tensors file {path!r} does not exist; accepted: {accepted}")]
    if p.suffix not in TENSOR_SUFFIXES:
        return [ConfigIssue(key, f"{path!r} is not a tensors file; accepted suffixes: {', '.join(TENSOR_SUFFIXES)}")]
    return []
