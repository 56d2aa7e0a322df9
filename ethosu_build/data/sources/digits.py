"""`digits`: scikit-learn's 8x8 digits, a fixed train/test split; `digits_masked`: the digits
with a seeded bool mask of allowed classes (two inputs)."""

from __future__ import annotations

from .tensors import Arrays

# 1797 digits; a fixed permutation splits them 1437 train / 360 test.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SIZE = 360


def digits(split: str = "train"):
    """scikit-learn's digits as (1, 8, 8) float images in [0, 1] with their labels."""
    import numpy as np

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be train, test or all, got {split!r}")
    images, target = load_digits()
    order = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(target))
    if split == "train":
        order = order[DIGITS_TEST_SIZE:]
    elif split == "test":
        order = order[:DIGITS_TEST_SIZE]
    x = (images[order] / 16.0).astype("float32")[:, None, :, :]
    return Arrays(x, target[order])


def load_digits():
    """scikit-learn's digits (images (1797, 8, 8) float64, labels int): the arrays of
    `sklearn.datasets.load_digits()`, read from the file it reads. Importing
    `sklearn.datasets` costs 2-2.5 s (SciPy and the rest of scikit-learn) for a 60 KB file,
    a fifth of a cold build's imports; locating the package does not import it. A
    scikit-learn that no longer ships the file is asked the usual way."""
    import gzip
    import importlib.util
    from pathlib import Path

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    roots = spec.submodule_search_locations if spec is not None else None
    found = [Path(r) / "datasets" / "data" / "digits.csv.gz" for r in roots or ()]
    found = [f for f in found if f.is_file()]
    if not found:
        from sklearn.datasets import load_digits as sklearn_load_digits

        d = sklearn_load_digits()
        return d.images, d.target
    with gzip.open(found[0], mode="rt", encoding="utf-8") as f:  # as scikit-learn reads it
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


class _Masked:
    """Digits with a seeded mask of allowed classes per image: ((image, mask), label)."""

    def __init__(self, digits: Arrays, seed: int, allowed: float):
        import torch

        gen = torch.Generator().manual_seed(int(seed))
        self.digits = digits
        self.masks = torch.rand(len(digits), 10, generator=gen) < allowed
        self.masks[torch.arange(len(digits)), torch.as_tensor(digits.y)] = True  # the true class is always allowed

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, i: int):
        image, label = self.digits[i]
        return (image, self.masks[i]), label


def digits_masked(split: str = "train", seed: int = 0, allowed: float = 0.5):
    """`digits` with, per image, a bool mask of 10 allowed classes: the true class and each
    other one with probability `allowed` (for the two-input model digits_masked)."""
    return _Masked(digits(split), seed, allowed)
