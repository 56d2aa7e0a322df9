"""The built-in calibration and evaluation sources, one module each, and their registry.

Each source declares itself in SOURCES: the name a config's `_target_` gives it
(`ethosu_build.data.<name>`), the function that target calls, what its `path` must be
(checked before anything loads: data/checks.py) and what its fingerprint holds beyond its
config and code (data/fingerprints.py). Adding a source: its module here and its line in
SOURCES (data/__init__.py then answers `ethosu_build.data.<name>` with its function), and a
YAML option in conf/calibration/ and conf/evaluation/.

The modules import numpy/torch/PIL only inside functions: the registry is read while a
config is validated and the up-to-date check runs, before any heavy import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigIssue
from . import digits, folder, images, random, tensors

PREFIX = "ethosu_build.data."  # what a built-in source's `_target_` starts with


def path_exists(key: str, path: str, dataset: dict[str, Any]) -> list[ConfigIssue]:
    """The check of a `path` given to a source that declares no check of its own: it exists."""
    return [] if Path(path).exists() else [ConfigIssue(key, f"{path!r} does not exist")]


@dataclass(frozen=True)
class Source:
    name: str  # `_target_: ethosu_build.data.<name>`
    make: Callable[..., Any] | None  # the function it calls (None: a user's own source)
    # (key, path, the dataset's arguments) -> what is wrong with its `path`, without loading anything
    path_issues: Callable[[str, str, dict[str, Any]], list[ConfigIssue]] = path_exists
    # (folder, pattern) -> the files of a folder `path` its fingerprint hashes. The default, the
    # .npy/.pt sample files, is also what a user's own source gets: see OTHER.
    samples_in: Callable[[Path, str], list[Path]] = folder.sample_files
    package: str | None = None  # the distribution whose data it reads: its version is in the fingerprint

    @property
    def target(self) -> str:
        return PREFIX + self.name


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("random", random.random),
        Source("digits", digits.digits, package="scikit-learn"),
        Source("digits_masked", digits.digits_masked, package="scikit-learn"),
        Source("tensors", tensors.tensors, path_issues=tensors.path_issues),
        Source("folder", folder.folder, path_issues=folder.path_issues, samples_in=folder.sample_files),
        Source("images", images.images, path_issues=images.path_issues, samples_in=images.image_files),
    )
}

# Any other `_target_` (a user's callable): its `path`, if it takes one, must exist, and a folder
# `path` is fingerprinted by its .npy/.pt files, as before the registry (hashing every file of
# the folder would be the safer rule, and would change these fingerprints).
OTHER = Source("", None)


def lookup(target: str) -> Source:
    """The source a `_target_` names: a registered one, else OTHER."""
    return SOURCES.get(target[len(PREFIX) :], OTHER) if target.startswith(PREFIX) else OTHER
