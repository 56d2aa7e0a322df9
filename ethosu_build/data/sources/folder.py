"""`folder`: one `.npy`/`.pt` file per sample, optionally labelled by sub-folder name."""

from __future__ import annotations

from pathlib import Path

from ...errors import ConfigIssue
from .. import class_folders

SAMPLE_SUFFIXES = (".npy", ".pt")


def sample_files(path: Path, pattern: str) -> list[Path]:
    """The sample files under `path` matching `pattern`, sorted: the samples, in order."""
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
    files = sample_files(Path(path), pattern)
    if not labels_from_subfolders:
        return _Files(files, None)
    index, _ = class_folders.labels((f.parent.name for f in files), numbers_only=True)
    return _Files(files, [index[f.parent.name] for f in files], index)


def path_issues(key: str, path: str, dataset: dict) -> list[ConfigIssue]:
    """`path` must be a folder holding sample files (that `pattern` matches)."""
    p = Path(path)
    kinds = "/".join(SAMPLE_SUFFIXES)
    if not p.is_dir():
        return [ConfigIssue(key, f"folder {path!r} does not exist; accepted: an existing folder of {kinds} files")]
    if not sample_files(p, str(dataset.get("pattern", "*"))):
        return [ConfigIssue(key, f"folder {path!r} holds no {kinds} sample files")]
    return []
