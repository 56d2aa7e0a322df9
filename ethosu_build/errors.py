"""The error types that map to ethosu-build's exit codes (see README, "Exit codes")."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_BUDGET_BREACHED = 3


@dataclass(frozen=True)
class ConfigIssue:
    key: str  # dotted path, e.g. "overrides.block.module_name"
    message: str  # names the bad value and what is accepted

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Exception):
    """The config is wrong; nothing was built. Exit code 2."""

    exit_code = EXIT_CONFIG_ERROR

    def __init__(self, issues: Sequence[ConfigIssue] | ConfigIssue):
        self.issues = [issues] if isinstance(issues, ConfigIssue) else list(issues)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        head = f"config error{'s' if n > 1 else ''} ({n}), nothing was built:"
        return "\n".join([head] + [f"  - {issue}" for issue in self.issues])


class BuildError(Exception):
    """The build itself failed (Vela rejected the graph, a stage crashed). Exit code 1."""

    exit_code = EXIT_BUILD_FAILED


def accepted(values: Iterable[object], bad: object | None = None, limit: int = 12) -> str:
    """'accepted: a, b, c' plus 'did you mean x?' when a close match exists."""
    shown = [("null" if v is None else str(v)) for v in values]
    text = "accepted: " + ", ".join(shown[:limit]) + (", ..." if len(shown) > limit else "")
    hint = did_you_mean(bad, shown) if isinstance(bad, str) else ""
    return f"{text}{hint}"


def did_you_mean(bad: str, candidates: Iterable[str], n: int = 3) -> str:
    close = difflib.get_close_matches(bad, list(candidates), n=n, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
