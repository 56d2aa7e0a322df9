"""`random`: seeded noise shaped like the model's inputs, each in its dtype."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..sampling import DTYPE_LIMITS

# The values `random` draws for an integer or bool input: the dtype's range, but for int32
# (most often an index or a count) [0, 256).
INT_RANGES = {**DTYPE_LIMITS, "int32": (0, 256)}


class _Random:
    def __init__(self, specs: list[dict[str, Any]], seed: int, size: int, low: float, high: float):
        import torch

        gen = torch.Generator().manual_seed(int(seed))
        self.xs = []
        for spec in specs:
            shape, dtype = list(spec["shape"]), spec.get("dtype", "float32")
            sample_shape = shape[1:] if len(shape) > 1 and shape[0] == 1 else shape
            if dtype == "float32":
                self.xs.append(torch.rand([int(size)] + sample_shape, generator=gen) * (high - low) + low)
            else:
                lo, hi = INT_RANGES[dtype]
                drawn = torch.randint(lo, hi, [int(size)] + sample_shape, generator=gen)
                self.xs.append(drawn.bool() if dtype == "bool" else drawn.to(getattr(torch, dtype)))

    def __len__(self) -> int:
        return len(self.xs[0])

    def __getitem__(self, i: int):
        return self.xs[0][i] if len(self.xs) == 1 else tuple(x[i] for x in self.xs)


def random(
    shape: Sequence[int] | None = None,
    seed: int = 0,
    size: int = 1024,
    low: float = -1.0,
    high: float = 1.0,
    inputs: Sequence[dict[str, Any]] | None = None,
):
    """`size` samples of uniform noise, reproducible from `seed`: float32 in [low, high);
    with `inputs` (model.inputs), one tensor per input in its own dtype (integers over the
    dtype's range, int32 over [0, 256), bool fair coins)."""
    specs = [dict(s) for s in inputs] if inputs else [{"shape": list(shape or []), "dtype": "float32"}]
    return _Random(specs, seed, size, low, high)
