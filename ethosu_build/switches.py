"""The project's `auto|on|off` environment variables (ETHOSU_BUILD_WARM, ETHOSU_BUILD_BACKGROUND):
one parser, so that both accept the same spellings and refuse a bad value with the same error.

Loaded by every command before anything heavy (warm/, cli.py): the standard library only at
import; errors.py (10 ms of imports) only once a value is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

Switch = Literal["auto", "on", "off"]

# Case-insensitive, surrounding blanks ignored; set but empty is the default.
SPELLINGS: dict[str, Switch] = {
    "": "auto",
    "auto": "auto",
    "on": "on",
    "1": "on",
    "true": "on",
    "yes": "on",
    "off": "off",
    "0": "off",
    "false": "off",
    "no": "off",
}
ACCEPTED = "auto (the default), on (1, true, yes), off (0, false, no)"


def switch(name: str, environ: Mapping[str, str] = os.environ) -> Switch:
    """The value of the variable `name`: auto when unset; a ConfigError (exit 2) naming the
    variable, its value and what is accepted for anything else."""
    raw = environ.get(name)
    if raw is None:
        return "auto"
    value = SPELLINGS.get(raw.strip().lower())
    if value is None:
        from .errors import ConfigError, ConfigIssue

        raise ConfigError(ConfigIssue(name, f"{raw!r} is not accepted; accepted: {ACCEPTED}"))
    return value
