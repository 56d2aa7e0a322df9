"""From a source to the samples a stage uses: `instantiate` the config's source, `draw` which
items to take, `take` them, each checked against the model's inputs, as `Samples`.

numpy and torch are imported inside the functions: a build loads them only when it samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, ConfigIssue, first_line

# The [low, high) a value of an integer or bool input must lie in.
DTYPE_LIMITS = {"int8": (-128, 128), "int16": (-32768, 32768), "int32": (-(2**31), 2**31), "bool": (0, 2)}


@dataclass
class Samples:
    x: tuple  # one torch.Tensor (N, *shape[1:]) per model input, in the forward's order
    y: Any | None  # torch.Tensor (N,) of labels, or None
    classes: list[str] | None = None  # class names by label, when the source has them

    def __len__(self) -> int:
        return len(self.x[0])

    def chunks(self, size: int) -> list[tuple]:
        """The inputs in batches of `size`: one tuple of tensors per call of the model."""
        import torch

        return list(zip(*(torch.split(x, size) for x in self.x)))

    def select(self, index) -> tuple:
        """The inputs of the samples `index` (a slice or index tensor)."""
        return tuple(x[index] for x in self.x)


def instantiate(dataset: dict[str, Any]):
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(dataset, _convert_="all")


def draw(size: int, num_samples: int, seed: int | None) -> list[int]:
    """Which items to take: the first `num_samples` (seed null), or a seeded random draw of
    them without replacement, in the drawn order. numpy's RandomState: its stream is frozen
    across numpy versions and platforms, so a recipe draws the same samples everywhere."""
    if seed is None:
        return list(range(num_samples))
    import numpy as np  # numpy is loaded by then: the data sources import it

    return [int(i) for i in np.random.RandomState(seed).permutation(size)[:num_samples]]


def take(ds, num_samples: int, specs: Sequence[Any], key: str = "dataset", seed: int | None = None) -> Samples:
    """`num_samples` items (see `draw`), stacked per model input (`specs`: the config's
    InputSpec list, model.input_specs()). An item is the inputs, or the inputs and an integer
    label: one tensor (or array) for a model of one input, else a tuple of one per input,
    flat (`(x1, x2)`, `(x1, x2, label)`) or nested (`((x1, x2), label)`). An item that cannot
    be read, or whose inputs do not have the model's shapes and dtypes, is a config error
    naming `key`, the item, the input and what is accepted."""
    import torch

    items = _Items(ds, specs, key)
    xs: list[list] = [[] for _ in specs]
    ys = []
    for i in draw(len(ds), num_samples, seed):
        inputs, y = items.split(i, items.read(i))
        for k, (x, spec) in enumerate(zip(inputs, specs)):
            xs[k].append(items.tensor(i, x, spec))
        ys.append(None if y is None else items.label(i, y))
    labelled = all(y is not None for y in ys)
    classes = getattr(ds, "classes", None)
    return Samples(
        tuple(torch.stack(x) for x in xs),
        torch.as_tensor(ys) if labelled else None,
        [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None,
    )


class _Items:
    """The items of `ds` read as the model's inputs (`specs`): each step of `take` on one item,
    and the config error naming `key`, the item and what is accepted when it fails."""

    def __init__(self, ds, specs: Sequence[Any], key: str):
        self.ds, self.specs, self.key, self.n = ds, specs, key, len(specs)

    def which(self, i: int) -> str:
        describe = getattr(self.ds, "describe", None)
        return f"item {i} of {_target_name(self.ds)}" + (f" ({describe(i)})" if callable(describe) else "")

    def expects(self) -> str:
        if self.n == 1:
            s = self.specs[0]
            return f"items that are one model input of shape {list(s.shape)[1:]} (or {list(s.shape)})"
        return "items that are a tuple of the model's inputs " + ", ".join(
            f"{s.name} {s.dtype} {list(s.shape)[1:]}" for s in self.specs
        )

    def bad(self, i: int, what: str) -> ConfigError:
        accepted = f"{self.expects()}, optionally with an integer label"
        return ConfigError(ConfigIssue(self.key, f"{self.which(i)} {what}; accepted: {accepted}"))

    def read(self, i: int):
        try:
            return self.ds[i]
        except (Exception, SystemExit) as exc:  # a user's __getitem__: name it, do not crash
            why = (
                f"it called sys.exit({exc.code!r})"
                if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {first_line(exc)}"
            )
            raise self.bad(i, f"could not be read ({why})") from exc

    def split(self, i: int, item) -> tuple[list, Any]:
        """(the item's inputs, its label or None)."""
        n = self.n
        if not isinstance(item, (tuple, list)):
            if n != 1:
                raise self.bad(i, f"is one tensor, but the model takes {n} inputs")
            return [item], None
        if not item:
            raise self.bad(i, "is an empty tuple")
        if n == 1:
            return [item[0]], item[1] if len(item) > 1 else None
        if isinstance(item[0], (tuple, list)):
            if len(item[0]) != n:
                raise self.bad(i, f"holds {len(item[0])} inputs, not {n}")
            return list(item[0]), item[1] if len(item) > 1 else None
        if len(item) in (n, n + 1):
            return list(item[:n]), item[n] if len(item) > n else None
        raise self.bad(i, f"is a tuple of {len(item)} items, not {n} inputs (and a label)")

    def tensor(self, i: int, x, spec):
        """Input `x` of item `i` as the tensor `spec` describes, checked."""
        import numpy as np
        import torch

        what = f"input {spec.name!r}" if self.n > 1 else "its input"
        try:
            if isinstance(x, torch.Tensor):  # numpy has no bfloat16: widen it, exactly
                x = x.detach().cpu().float() if x.dtype == torch.bfloat16 else x.detach().cpu()
            array = np.asarray(x)
        except Exception as exc:
            raise self.bad(i, f"{what} is not an array ({type(exc).__name__}: {first_line(exc)})") from exc
        if array.dtype.kind not in "biuf":
            kinds = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}
            raise self.bad(i, f"{what} holds {kinds.get(array.dtype.kind, array.dtype)}")
        if list(array.shape) == list(spec.shape):
            array = array[0]  # given with the leading batch dimension of 1
        if list(array.shape) != list(spec.shape)[1:]:
            raise self.bad(i, f"{what} has shape {list(array.shape)}")
        if spec.dtype == "float32":
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise self.bad(i, f"{what} holds NaN or infinity, which no quantization range can cover")
            return torch.as_tensor(array, dtype=torch.float32)
        if array.dtype.kind == "f":
            raise self.bad(i, f"{what} holds floats ({array.dtype}), but the input is {spec.dtype}")
        lo, hi = DTYPE_LIMITS[spec.dtype]
        if array.size and (array.min() < lo or array.max() >= hi):
            raise self.bad(i, f"{what} holds values outside {spec.dtype} ([{array.min()}, {array.max()}])")
        return torch.as_tensor(array.astype(np.int64)).to(getattr(torch, spec.dtype))

    def label(self, i: int, y) -> int:
        import numpy as np
        import torch

        label = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
        if label.shape != () or label.dtype.kind not in "biu":
            accepted = "an integer class index (or no label)"
            raise ConfigError(ConfigIssue(self.key, f"{self.which(i)} has label {y!r}; accepted: {accepted}"))
        return int(label)


def _target_name(ds) -> str:
    return f"{type(ds).__module__}.{type(ds).__qualname__}"
