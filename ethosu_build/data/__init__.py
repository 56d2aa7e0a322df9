"""Calibration and evaluation sources.

A source is any callable named by `dataset._target_` that returns a sized, indexable
dataset whose items are the model's inputs, or the inputs and a label: one tensor (or array)
for a one-input model, a tuple of one per input otherwise (`take`). Inputs are one sample
without the batch dimension (a leading 1 is also accepted). Built-in sources (sources/, one
module each, declared in the registry sources.SOURCES):

- `random`   seeded noise shaped like the model's inputs, each in its dtype
- `digits`   scikit-learn's 8x8 digits, a fixed train/test split
- `digits_masked`  the digits with a seeded bool mask of allowed classes (two inputs)
- `tensors`  a `.pt` or `.npz` file holding inputs (and optionally labels)
- `folder`   one `.npy`/`.pt` file per sample, optionally labelled by sub-folder name
- `images`   a folder of PNG/JPEG/BMP images, optionally labelled by sub-folder name, each
             turned into the model's input by `model.preprocess` (preprocess.py)

This package is the data layer's public face: a config's `_target_: ethosu_build.data.<name>`
is looked up here (Hydra's _locate), and the rest of the build calls the names below. A
source's function is found through the registry (`__getattr__` below), so a new source is its
module and its line in SOURCES. The sources live in a subpackage because a module
`data/digits.py` would shadow the function `data.digits` once imported.

Nothing here imports numpy/torch/PIL at module level: `fingerprint()` and `dataset_issues()`
run during validation and the up-to-date check, before any heavy import.
"""

from __future__ import annotations

from . import class_folders, preprocess
from .checks import SEED_MAX, dataset_issues, static_issues
from .fingerprints import fingerprint
from .sampling import Samples, draw, instantiate, take
from .sources import SOURCES, Source
from .sources.digits import DIGITS_SPLIT_SEED, DIGITS_TEST_SIZE, load_digits
from .sources.folder import SAMPLE_SUFFIXES
from .sources.images import IMAGE_SUFFIXES
from .sources.tensors import TENSOR_SUFFIXES
from .summaries import RANGE_TOLERANCE, range_warnings, summary

__all__ = [
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SIZE",
    "IMAGE_SUFFIXES",
    "RANGE_TOLERANCE",
    "SAMPLE_SUFFIXES",
    "SEED_MAX",
    "SOURCES",
    "TENSOR_SUFFIXES",
    "Samples",
    "Source",
    "class_folders",
    "dataset_issues",
    "draw",
    "fingerprint",
    "instantiate",
    "load_digits",
    "preprocess",
    "range_warnings",
    "static_issues",
    "summary",
    "take",
]


def __getattr__(name: str):
    """`ethosu_build.data.<name>` of a registered source is its function (PEP 562)."""
    source = SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return source.make


def __dir__() -> list[str]:
    return sorted([*__all__, *SOURCES])
