"""Calibration and evaluation sources.

A source is any callable named by `dataset._target_` that returns a sized, indexable
dataset whose items are the model's inputs, or the inputs and a label: one tensor (or array)
for a one-input model, a tuple of one per input otherwise (`take`). Inputs are one sample
without the batch dimension (a leading 1 is also accepted). Built-in sources:

- `random`   seeded noise shaped like the model's inputs, each in its dtype
- `digits`   scikit-learn's 8x8 digits, a fixed train/test split
- `digits_masked`  the digits with a seeded bool mask of allowed classes (two inputs)
- `tensors`  a `.pt` or `.npz` file holding inputs (and optionally labels)
- `folder`   one `.npy`/`.pt` file per sample, optionally labelled by sub-folder name
- `images`   a folder of PNG/JPEG/BMP images, optionally labelled by sub-folder name, each
             turned into the model's input by `model.preprocess` (preprocess.py)

The module imports numpy/torch only inside functions: `fingerprint()` and `static_issues()`
run during validation and the up-to-date check, before any heavy import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigIssue, first_line
from ..fingerprint import canonical_json, file_sha256, source_fingerprint, tool_version
from . import class_folders
from . import preprocess as pre

TENSOR_SUFFIXES = (".pt", ".npz")
SAMPLE_SUFFIXES = (".npy", ".pt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # any case
# Sources whose output also depends on another package's data.
_DATA_PACKAGES = {"ethosu_build.data.digits": "scikit-learn", "ethosu_build.data.digits_masked": "scikit-learn"}


# --- built-in sources ---------------------------------------------------------------------


# The values `random` draws for an integer or bool input: the dtype's range, but for int32
# (most often an index or a count) [0, 256).
_INT_RANGES = {"int8": (-128, 128), "int16": (-32768, 32768), "int32": (0, 256), "bool": (0, 2)}
_DTYPE_LIMITS = {**_INT_RANGES, "int32": (-(2**31), 2**31)}  # [low, high) a given value must lie in


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
                lo, hi = _INT_RANGES[dtype]
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


class _Arrays:
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
    return _Arrays(x, target[order])


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

    def __init__(self, digits: _Arrays, seed: int, allowed: float):
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
    return _Arrays(xs[0] if isinstance(inputs_key, str) else tuple(xs), y)


def _folder_files(path: Path, pattern: str) -> list[Path]:
    return sorted(f for f in path.rglob(pattern) if f.is_file() and f.suffix in SAMPLE_SUFFIXES)


class _Files:
    """One sample per file, read when the item is taken."""

    def __init__(self, files: list[Path], labels: list[int] | None, folders: dict[str, int] | None = None):
        self.files, self.labels = files, labels
        self.class_folders = folders  # folder name -> label (class_folders.py), checked against the model

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, i: int) -> str:
        return str(self.files[i])

    def __getitem__(self, i: int):
        import numpy as np
        import torch

        f = self.files[i]
        x = (
            np.load(f, allow_pickle=False)
            if f.suffix == ".npy"
            else torch.load(f, map_location="cpu", weights_only=True)
        )
        return x if self.labels is None else (x, self.labels[i])


def folder(path: str, pattern: str = "*", labels_from_subfolders: bool = False):
    """One sample per `.npy`/`.pt` file (sorted by path). With `labels_from_subfolders`,
    `path/<int label>/<file>` gives the label."""
    files = _folder_files(Path(path), pattern)
    if not labels_from_subfolders:
        return _Files(files, None)
    index, _ = class_folders.labels((f.parent.name for f in files), numbers_only=True)
    return _Files(files, [index[f.parent.name] for f in files], index)


def _image_files(path: Path, pattern: str) -> list[Path]:
    return sorted(f for f in path.rglob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


class _Images:
    """One image per file, decoded and preprocessed when the item is taken."""

    def __init__(self, files: list[Path], labels: list[int] | None, classes: list[str] | None, steps: list):
        self.files, self.labels, self.classes, self.steps = files, labels, classes, steps
        self.class_folders: dict[str, int] | None = None  # folder name -> label, checked against the model

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, i: int) -> str:
        return str(self.files[i])

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as image:
            x = pre.apply(image, self.steps)
        return x if self.labels is None else (x, self.labels[i])

    def check(self, indices: Sequence[int]) -> list[str]:
        """What is wrong with the images `indices` (those a build would take), reading only
        their headers: an unreadable file, a crop larger than the image, or sizes that differ
        after the steps (mixed sizes need a resize or a crop)."""
        from PIL import Image, UnidentifiedImageError

        problems, first = [], None
        for i in indices:
            f = self.files[i]
            try:
                with Image.open(f) as image:
                    width, height = image.size
                    channels = pre.image_channels(self.steps, image.mode)
            except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
                problems.append(f"{f} is not a readable image ({type(exc).__name__}: {first_line(exc)})")
                continue
            why = pre.crop_too_large(self.steps, height, width)
            if why:
                problems.append(f"{f}: {why}")
                continue
            size = pre.output_size(self.steps, height, width)
            if first is None:
                first = (f, height, width, size, channels)
            elif channels != first[4]:
                problems.append(
                    f"{f} makes a {channels}-channel input and {first[0]} a {first[4]}-channel one: gray and colour "
                    "images mixed need a color step (gray or rgb) in model.preprocess"
                )
            elif size != first[3]:
                problems.append(
                    f"{f} is {height}x{width} and {first[0]} is {first[1]}x{first[2]}, which the steps make "
                    f"{size[0]}x{size[1]} and {first[3][0]}x{first[3][1]}: images of mixed sizes need a resize "
                    "to [height, width] or a center_crop in model.preprocess"
                )
            if len(problems) >= 5:
                break
        return problems


def images(path: str, pattern: str = "*", labels_from_subfolders: bool = False, preprocess: Sequence = ()):
    """One sample per image file (PNG, JPEG, BMP; sorted by path), decoded with Pillow and
    turned into the model's input by the `preprocess` steps (preprocess.py; the config passes
    model.preprocess). With `labels_from_subfolders`, `path/<class>/<file>` gives the label
    (class_folders.py: the number a folder is named by, or the names sorted, numbered from 0)."""
    root = Path(path)
    files = _image_files(root, pattern)
    steps = [dict(s) for s in preprocess]
    if not labels_from_subfolders:
        return _Images(files, None, None, steps)
    loose = [f for f in files if f.parent == root]
    if loose:
        raise ValueError(f"labels_from_subfolders: {loose[0]} is not in a class folder; accepted: path/<class>/<image>")
    index, classes = class_folders.labels(f.relative_to(root).parts[0] for f in files)
    ds = _Images(files, [index[f.relative_to(root).parts[0]] for f in files], classes, steps)
    ds.class_folders = index
    return ds


# --- checks and fingerprints without heavy imports -------------------------------------------


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
    p = Path(str(path))
    if target.endswith("data.tensors"):
        if not p.is_file():
            issues.append(
                ConfigIssue(
                    f"{key}.path",
                    f"tensors file {str(path)!r} does not exist; accepted: an existing "
                    f"{' or '.join(TENSOR_SUFFIXES)} file",
                )
            )
        elif p.suffix not in TENSOR_SUFFIXES:
            issues.append(
                ConfigIssue(
                    f"{key}.path",
                    f"{str(path)!r} is not a tensors file; accepted suffixes: {', '.join(TENSOR_SUFFIXES)}",
                )
            )
    elif target.endswith("data.folder"):
        if not p.is_dir():
            issues.append(
                ConfigIssue(
                    f"{key}.path",
                    f"folder {str(path)!r} does not exist; accepted: an existing folder of "
                    f"{'/'.join(SAMPLE_SUFFIXES)} files",
                )
            )
        elif not _folder_files(p, str(dataset.get("pattern", "*"))):
            issues.append(
                ConfigIssue(f"{key}.path", f"folder {str(path)!r} holds no {'/'.join(SAMPLE_SUFFIXES)} sample files")
            )
    elif target.endswith("data.images"):
        accepted = f"an existing folder of {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images"
        if not p.is_dir():
            issues.append(ConfigIssue(f"{key}.path", f"folder {str(path)!r} does not exist; accepted: {accepted}"))
        elif not _image_files(p, str(dataset.get("pattern", "*"))):
            issues.append(
                ConfigIssue(
                    f"{key}.path",
                    f"folder {str(path)!r} holds no image files (pattern {dataset.get('pattern', '*')!r}); "
                    f"accepted: {accepted}",
                )
            )
    elif not p.exists():
        issues.append(ConfigIssue(f"{key}.path", f"{str(path)!r} does not exist"))
    return issues


def fingerprint(dataset: dict[str, Any]) -> str:
    """sha256 over what determines the samples: the source's config and code, the files it
    reads (by content) and, for packaged data, the package version. A file or folder is
    named in the key by its content only, never by how its path is spelled: `data/a.npz`,
    `./data/a.npz`, its absolute path and a byte-identical copy give the same key."""
    target = str(dataset.get("_target_"))
    samples_in = _image_files if target.endswith("data.images") else _folder_files
    parts: dict[str, Any] = {
        "config": _by_content(dataset, lambda p: samples_in(p, str(dataset.get("pattern", "*")))),
        "source": source_fingerprint(target),
    }
    if target in _DATA_PACKAGES:
        parts["package"] = tool_version(_DATA_PACKAGES[target])
    return hashlib.sha256(canonical_json(parts).encode()).hexdigest()


def _by_content(value: Any, samples_in, key: str = "") -> Any:
    """`value` with every string that names an existing file or folder replaced by a hash
    of its content: the `path` of the built-in sources, and any path argument of a user's
    own source. A folder's sample files are hashed with their names relative to it (labels
    may come from subfolder names); `path` of a folder source holds the files `samples_in`
    lists (its sample files, honouring its `pattern`)."""
    if isinstance(value, dict):
        # steps name no file: a step `resize` is not the folder ./resize
        return {k: v if k == "preprocess" else _by_content(v, samples_in, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_by_content(v, samples_in, key) for v in value]
    if not isinstance(value, str) or not value or value == "???":
        return value
    p = Path(value).expanduser()
    try:
        if p.is_file():
            return {"file_sha256": file_sha256(p)}
        if p.is_dir():
            files = samples_in(p) if key == "path" else sorted(f for f in p.rglob("*") if f.is_file())
            return {"folder": {str(f.relative_to(p)): file_sha256(f) for f in files}}
    except OSError:
        return value
    return value


# --- loading ------------------------------------------------------------------------------------


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
    import numpy as np
    import torch

    n = len(specs)

    def which(i: int) -> str:
        describe = getattr(ds, "describe", None)
        return f"item {i} of {_target_name(ds)}" + (f" ({describe(i)})" if callable(describe) else "")

    def expects() -> str:
        if n == 1:
            s = specs[0]
            return f"items that are one model input of shape {list(s.shape)[1:]} (or {list(s.shape)})"
        return "items that are a tuple of the model's inputs " + ", ".join(
            f"{s.name} {s.dtype} {list(s.shape)[1:]}" for s in specs
        )

    def bad(i: int, what: str) -> ConfigError:
        return ConfigError(
            ConfigIssue(key, f"{which(i)} {what}; accepted: {expects()}, optionally with an integer label")
        )

    def split(i: int, item) -> tuple[list, Any]:
        if not isinstance(item, (tuple, list)):
            if n != 1:
                raise bad(i, f"is one tensor, but the model takes {n} inputs")
            return [item], None
        if not item:
            raise bad(i, "is an empty tuple")
        if n == 1:
            return [item[0]], item[1] if len(item) > 1 else None
        if isinstance(item[0], (tuple, list)):
            if len(item[0]) != n:
                raise bad(i, f"holds {len(item[0])} inputs, not {n}")
            return list(item[0]), item[1] if len(item) > 1 else None
        if len(item) in (n, n + 1):
            return list(item[:n]), item[n] if len(item) > n else None
        raise bad(i, f"is a tuple of {len(item)} items, not {n} inputs (and a label)")

    def tensor(i: int, x, spec):
        what = f"input {spec.name!r}" if n > 1 else "its input"
        try:
            if isinstance(x, torch.Tensor):  # numpy has no bfloat16: widen it, exactly
                x = x.detach().cpu().float() if x.dtype == torch.bfloat16 else x.detach().cpu()
            array = np.asarray(x)
        except Exception as exc:
            raise bad(i, f"{what} is not an array ({type(exc).__name__}: {first_line(exc)})") from exc
        if array.dtype.kind not in "biuf":
            kinds = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects"}
            raise bad(i, f"{what} holds {kinds.get(array.dtype.kind, array.dtype)}")
        if list(array.shape) == list(spec.shape):
            array = array[0]  # given with the leading batch dimension of 1
        if list(array.shape) != list(spec.shape)[1:]:
            raise bad(i, f"{what} has shape {list(array.shape)}")
        if spec.dtype == "float32":
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise bad(i, f"{what} holds NaN or infinity, which no quantization range can cover")
            return torch.as_tensor(array, dtype=torch.float32)
        if array.dtype.kind == "f":
            raise bad(i, f"{what} holds floats ({array.dtype}), but the input is {spec.dtype}")
        lo, hi = _DTYPE_LIMITS[spec.dtype]
        if array.size and (array.min() < lo or array.max() >= hi):
            raise bad(i, f"{what} holds values outside {spec.dtype} ([{array.min()}, {array.max()}])")
        return torch.as_tensor(array.astype(np.int64)).to(getattr(torch, spec.dtype))

    xs: list[list] = [[] for _ in specs]
    ys = []
    for i in draw(len(ds), num_samples, seed):
        try:
            item = ds[i]
        except (Exception, SystemExit) as exc:  # a user's __getitem__: name it, do not crash
            why = (
                f"it called sys.exit({exc.code!r})"
                if isinstance(exc, SystemExit)
                else f"{type(exc).__name__}: {first_line(exc)}"
            )
            raise bad(i, f"could not be read ({why})") from exc
        inputs, y = split(i, item)
        for k, (x, spec) in enumerate(zip(inputs, specs)):
            xs[k].append(tensor(i, x, spec))
        if y is not None:
            label = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
            if label.shape != () or label.dtype.kind not in "biu":
                raise ConfigError(
                    ConfigIssue(key, f"{which(i)} has label {y!r}; accepted: an integer class index (or no label)")
                )
            y = int(label)
        ys.append(y)
    labelled = all(y is not None for y in ys)
    classes = getattr(ds, "classes", None)
    return Samples(
        tuple(torch.stack(x) for x in xs),
        torch.as_tensor(ys) if labelled else None,
        [str(c) for c in classes] if isinstance(classes, (list, tuple)) else None,
    )


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


def _target_name(ds) -> str:
    return f"{type(ds).__module__}.{type(ds).__qualname__}"
