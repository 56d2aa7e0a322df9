"""`images`: a folder of PNG/JPEG/BMP images, optionally labelled by sub-folder name, each
turned into the model's input by `model.preprocess` (data/preprocess.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ...errors import ConfigIssue, first_line
from .. import class_folders
from .. import preprocess as pre

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # any case


def image_files(path: Path, pattern: str) -> list[Path]:
    """The image files under `path` matching `pattern`, sorted: the samples, in order."""
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
    files = image_files(root, pattern)
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


def path_issues(key: str, path: str, dataset: dict) -> list[ConfigIssue]:
    """`path` must be a folder holding images (that `pattern` matches)."""
    p = Path(path)
    accepted = f"an existing folder of {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images"
    if not p.is_dir():
        return [ConfigIssue(key, f"folder {path!r} does not exist; accepted: {accepted}")]
    if not image_files(p, str(dataset.get("pattern", "*"))):
        pattern = dataset.get("pattern", "*")
        return [ConfigIssue(key, f"folder {path!r} holds no image files (pattern {pattern!r}); accepted: {accepted}")]
    return []
