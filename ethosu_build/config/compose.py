"""Compose a config as `ethosu-build OVERRIDES` would, outside a Hydra app: for
`ethosu-artifacts lock` / `verify --recipe` and for tests. Hydra's refusals become config
errors (hydra_errors.from_hydra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfigIssue
from .hydra_errors import from_hydra


def compose(overrides: list[str], searchpath: str | None = None) -> tuple[dict[str, Any], str | None, list[str]]:
    """(the resolved config, the recipe chosen or None, the config sources as Hydra names
    them: `file://DIR` for `searchpath`, then `pkg://ethosu_build.conf`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf, open_dict

    sources = [f"file://{Path(searchpath).resolve()}"] if searchpath else []
    if searchpath and not Path(searchpath).is_dir():
        raise ConfigError(
            ConfigIssue(
                "--searchpath",
                f"{searchpath!r} is not a folder; accepted: a folder holding your config groups (recipe/, model/, ...)",
            )
        )
    extra = [f"hydra.searchpath=[{sources[0]}]"] if sources else []
    try:
        with initialize_config_module("ethosu_build.conf", version_base="1.3"):
            cfg = hydra_compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
            recipe = cfg.hydra.runtime.choices.get("recipe")
            with open_dict(cfg):
                del cfg["hydra"]
            container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as exc:
        error = from_hydra(exc)
        if error is None:
            raise
        raise error from exc
    return container, recipe, [*sources, "pkg://ethosu_build.conf"]
