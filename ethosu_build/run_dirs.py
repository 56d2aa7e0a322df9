"""Hydra's run and sweep folders, checked before Hydra makes them (app.PreRunCheck): they lie
outside the store's own trees and can be created; and the sweep's launcher settings that
would fail only once the sweep launches. Also what an OSError outside a build means
(os_error). Imports nothing heavy: these are config-error paths.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .config.hydra_errors import from_hydra
from .errors import IO_ERRNOS, ConfigError, ConfigIssue, EthosuError, first_line, io_failure

# The store's trees that only ethosu-build writes: a run dir inside one would be taken for
# (part of) a version or a cache entry.
STORE_TREES = ("artifacts", "cache")
GONE = "the folder ethosu-build runs in no longer exists (it was removed); accepted: run it from an existing folder"


def check(config: DictConfig, key: str, root: Any) -> None:
    """`key` (hydra.run.dir or hydra.sweep.dir) lies outside the store's own trees and can be
    created; raises ConfigError naming it (or store.root, when its root is what cannot be
    made), or the failed build an I/O error makes."""
    try:
        folder = Path(os.path.expanduser(str(OmegaConf.select(config, key, throw_on_missing=True))))
    except Exception as exc:  # our store.root check, raised inside the interpolation
        raise from_hydra(exc) or ConfigError(ConfigIssue(key, first_line(exc))) from exc
    if not isinstance(root, str):
        return  # store.root's own check names it
    store = Path(os.path.expanduser(root)).resolve()
    where = folder.resolve()
    default = store / ("runs" if key == "hydra.run.dir" else "sweeps")
    for tree in STORE_TREES:
        if where == store / tree or store / tree in where.parents:
            raise ConfigError(
                ConfigIssue(
                    key,
                    f"{str(folder)!r} lies in the store's {tree}/ folder ({store / tree}), which only ethosu-build "
                    f"writes: a run's files there would be taken for part of it; accepted: a folder outside "
                    f"{store / tree}, e.g. the default under {default}",
                )
            )
    failed = _cannot_create(folder)
    if failed is None:
        return
    if failed.errno in IO_ERRNOS:
        raise io_failure(failed)
    blocked = Path(failed.filename or folder)
    mine = blocked == store or blocked in store.parents  # the store root itself cannot be made
    raise ConfigError(
        ConfigIssue(
            "store.root" if mine else key,
            f"{root if mine else str(folder)!r} cannot be created: {failed.strerror} ({blocked}); accepted: a folder "
            "whose parents exist or can be created by you",
        )
    )


def _cannot_create(folder: Path) -> OSError | None:
    """Whether `folder` can be made, found by making its missing parts and removing them
    again (Hydra makes it right after; only trying says whether, e.g., /proc takes it)."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    made: list[Path] = []
    try:
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:  # another build made it meanwhile
                continue
            made.append(m)
    except OSError as exc:
        return exc
    finally:
        for m in reversed(made):
            with contextlib.suppress(OSError):  # now in use by another build: theirs
                m.rmdir()
    return None


def check_launcher(config: DictConfig) -> None:
    """Launcher settings that the launcher only refuses with a traceback once it launches."""
    launcher = OmegaConf.select(config, "hydra.launcher") or {}
    if str(launcher.get("_target_", "")).endswith("JoblibLauncher") and launcher.get("n_jobs") == 0:
        raise ConfigError(
            ConfigIssue(
                "hydra.launcher.n_jobs",
                "0 runs no job; accepted: a number of parallel jobs >= 1, or a negative number counted back from "
                "the cores (-1: one per core, -2: all but one)",
            )
        )


def os_error(exc: OSError) -> EthosuError:
    """What an OSError outside a build means (build() maps its own): a full disk, a file size
    limit or a failing device failed the build (exit 1); anything else is a path ethosu-build
    cannot use: Hydra's run or sweep folder, its files, a config file (exit 2)."""
    if exc.errno in IO_ERRNOS:
        return io_failure(exc)
    return ConfigError(
        ConfigIssue(
            str(exc.filename or "store.root"),
            f"cannot be used: {type(exc).__name__}: {exc.strerror or first_line(exc)}; accepted: a store.root, "
            "hydra.run.dir and hydra.sweep.dir that you can create and write, and config files you can read",
        )
    )
