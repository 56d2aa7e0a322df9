"""Hydra's and OmegaConf's refusals in ethosu-build's words: a missing option, an override that
does not parse, an interpolation that does not resolve, a misspelled key (with the keys the
schema accepts there). Called where Hydra runs (app.py, compose.py, run_dirs.py) before
errors.outcome(), which knows nothing of Hydra."""

from __future__ import annotations

import re

from ..errors import ConfigError, ConfigIssue, did_you_mean, first_line
from .schema import accepted_keys


def from_hydra(exc: BaseException) -> ConfigError | None:
    """A config error for Hydra's and OmegaConf's own refusals (a missing option, an override
    that does not parse, an interpolation that does not resolve), or one of ours raised
    through them (a resolver's); None for anything else. A Ctrl-C or a closed pipe is never
    one, whatever it interrupted (a config error's handling, say): it keeps its own exit."""
    if isinstance(exc, (KeyboardInterrupt, BrokenPipeError)):
        return None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # ours, raised inside a resolver
        if isinstance(cause, ConfigError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    module = type(exc).__module__
    if module.startswith("yaml"):  # a config file that is not YAML (Hydra lets PyYAML's error through)
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}" if mark else "a config file"
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return ConfigError(
            ConfigIssue(where, f"is not valid YAML: {getattr(exc, 'problem', None) or first_line(exc)}{at}")
        )
    if not module.startswith(("hydra.", "omegaconf.")):
        return None
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    missing = missing_interpolation(exc)
    if missing is not None:
        return ConfigError(missing)
    return ConfigError(ConfigIssue(_hydra_key(exc), _hydra_message(exc)))


def missing_interpolation(exc: BaseException) -> ConfigIssue | None:
    """An interpolation of a schema key that is gone (`~model.input_shape` while a dataset's
    shape is `${model.input_shape}`) names that key, the one the command line removed,
    rather than only the key that refers to it. None for anything else (`name=${oops}`
    stays an issue of `name`)."""
    from omegaconf.errors import InterpolationKeyError

    match = re.search(r"Interpolation key '([^']+)' not found", str(exc))
    if not isinstance(exc, InterpolationKeyError) or match is None:
        return None
    missing, where = match.group(1), getattr(exc, "full_key", None) or "another key"
    if missing.rsplit(".", 1)[-1] not in (accepted_keys(missing) or []):
        return None
    return ConfigIssue(missing, f"is not set, but {where} refers to it (${{{missing}}}); accepted: a value for it")


def _hydra_key(exc: BaseException) -> str:
    key = getattr(exc, "full_key", None) or getattr(exc.__cause__, "full_key", None)
    if key:
        return str(key)
    text = str(exc)
    for marker in ("Could not find '", "Could not override '", "Could not append to config. An item is already at '"):
        if marker in text:
            return text.split(marker, 1)[1].split("'", 1)[0].split("/")[0]
    return "command line"


def _hydra_message(exc: BaseException) -> str:
    """Hydra's own words, on one line or a few, plus the keys the schema accepts where a key
    was misspelled."""
    text = str(exc).strip().split("Config search path:")[0]  # Hydra's search path dump says nothing here
    if "Available options in" in text:  # a group option that does not exist: Hydra lists the others
        head, _, options = text.partition("Available options in")
        names = [o.strip() for o in options.splitlines()[1:] if o.strip()]
        asked = head.split("/")[-1].strip("' ")
        return f"{head.strip()}; accepted: {', '.join(names)}{did_you_mean(asked, names)}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("See https://")]
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in str(exc):
        lines.append(first_line(cause))
    message = "; ".join(lines) or type(exc).__name__
    if "@recipe." in message:  # `override /target: ...` in a recipe file without its package header
        message += RECIPE_HINT
    key = getattr(cause, "full_key", None) or getattr(exc, "full_key", None)
    if key:
        keys = accepted_keys(str(key))
        if keys and "not in struct" in message and str(key).rsplit(".", 1)[-1] in keys:
            return unset_section(str(key), text)  # a key of the schema the chosen options leave out
        if keys:
            message += f"; accepted keys here: {', '.join(keys)}{did_you_mean(str(key).rsplit('.', 1)[-1], keys)}"
    return message


def unset_section(key: str, hydra_text: str) -> str:
    """`quantization.qat.epochs=5` under quantization=int8, whose file leaves qat out (null): Hydra
    says the key is not in struct and advises `+quantization.qat.epochs=5`, which would add a
    section without the keys it needs. Say what is unset and the two ways to set it."""
    from . import help as keys_help  # help reads the schema's comments: only for this message

    match = re.search(r"use \+([^=\s]+)=(.*)$", hydra_text, re.M)  # Hydra: "To append to your config use +K=V"
    wanted, value = (match.group(1), match.group(2).strip()) if match else (key, "")
    group, _, section = key.partition(".")
    meaning = keys_help.key_meaning(key)
    text = f"is not set by the chosen {group} option" + (f" ({meaning})" if meaning else "")
    options = keys_help.options_setting(group, section) if section and "." not in section else []
    if wanted != key:
        text += f", so {wanted}={value} has nothing to change"
    if group == "board" and not section:  # no board chosen, or a sweep's base config (which has none)
        return text + (
            "; accepted: board=NAME before it; in a sweep over boards (-m board=a,b), Hydra composes the sweep's "
            "base config without a board: sweep the key too (board.regions.SRAM.size=a,b), or for the memory mode "
            "use target.memory_mode=auto"
        )
    if not options:
        return text + f"; accepted: '+{key}=VALUE' adds it"
    rest = wanted[len(key) + 1 :]
    try:
        import yaml

        extra = {rest: yaml.safe_load(value)} if rest and "." not in rest else {}
        example = keys_help.section_example(group, section, options[0], extra)
    except Exception:  # a value YAML cannot read: the example would not be one
        example = "{...}"
    then = f" with {wanted}={value}" if wanted != key else ""
    return (
        text + f"; accepted: an option that sets it ({' or '.join(f'{group}={o}' for o in options)}){then}, "
        f"or the whole section: '+{key}={example}'"
    )


# A recipe file without Hydra's package header puts its keys under `recipe.` (its group).
RECIPE_HINT = (
    "; a recipe file's keys land under recipe. when the file does not begin with the line "
    "'# @package _global_': add it as the recipe's first line"
)
