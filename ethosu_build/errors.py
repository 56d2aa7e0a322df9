"""One error vocabulary: every way ethosu-build refuses or fails, its exit code, and the
status a sweep records for it.

Code raises one of the classes below; `outcome()` is the single map from any exception to
(exit code, status, message), used by both CLIs and by the sweep summary. See
docs/artifacts.md, "Exit codes".
"""

from __future__ import annotations

import difflib
import errno
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_CONFIG_ERROR = 2
EXIT_BUDGET_BREACHED = 3
# ethosu-artifacts' answer "not all well": damage or an untrusted version found, DIFFERS, other
# bytes (as diff(1) exits 1 when its inputs differ); never a bad argument (EXIT_CONFIG_ERROR)
EXIT_NOT_ALL_WELL = 1
EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by SIGINT
EXIT_BROKEN_PIPE = 141  # as a shell reports a process ended by SIGPIPE (`ls --json | head`)


class EthosuError(Exception):
    """The base of every error ethosu-build reports on purpose (never with a traceback)."""

    exit_code: ClassVar[int] = EXIT_BUILD_FAILED
    status: ClassVar[str] = "failed"  # the job's status in a sweep's summary

    def render(self) -> str:
        """The message for the user: one or a few lines."""
        return str(self)


@dataclass(frozen=True)
class ConfigIssue:
    key: str  # dotted path, e.g. "overrides.block.module_name", or a command-line argument
    message: str  # names the bad value and what is accepted

    def __str__(self) -> str:
        return f"{self.key}: {without_hydra_hints(self.message)}"


class ConfigError(EthosuError):
    """The config is wrong; nothing was built. Exit code 2."""

    exit_code = EXIT_CONFIG_ERROR
    status = "config_error"
    head = "config error{s} ({n}), nothing was built:"

    def __init__(self, issues: Sequence[ConfigIssue] | ConfigIssue):
        self.issues = [issues] if isinstance(issues, ConfigIssue) else list(issues)
        super().__init__(self.render())

    def render(self) -> str:
        n = len(self.issues)
        return "\n".join([self.head.format(s="s" if n > 1 else "", n=n)] + [f"  - {issue}" for issue in self.issues])


class UsageError(ConfigError):
    """A command-line argument of ethosu-artifacts is wrong (the key names the argument)."""

    head = "bad argument{s} ({n}), nothing was done:"


class NothingToDo(EthosuError):
    """The command has nothing to act on (e.g. no stored artifact to compare a recipe with)."""

    exit_code = EXIT_CONFIG_ERROR
    status = "config_error"


class BuildError(EthosuError):
    """The build itself failed (Vela rejected the graph, a stage crashed). Exit code 1."""

    exit_code = EXIT_BUILD_FAILED
    status = "failed"

    def render(self) -> str:
        return f"build failed, nothing was stored: {self}"


# OSErrors that say the machine failed the build (a full disk or quota, a file size limit, a
# failing device), never that a path the user gave is wrong: exit 1, not 2.
IO_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})


def io_failure(exc: OSError) -> BuildError:
    """The failed build an OSError during it makes (paths the user gives are checked before
    anything runs: config errors)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return BuildError(f"no space left on the device holding {exc.filename or 'the store'}; nothing was stored")
    where = f" ({exc.filename})" if exc.filename else ""
    return BuildError(f"an I/O error stopped it: {type(exc).__name__}: {exc.strerror or first_line(exc)}{where}")


class TrackingError(EthosuError):
    """`ethosu-artifacts track` could not log to the tracker (a build only warns). Exit code 1."""

    def render(self) -> str:
        return f"tracking failed, the store is unchanged: {self}"


class BudgetBreached(EthosuError):
    """A build gate failed; nothing was stored. Exit code 3."""

    exit_code = EXIT_BUDGET_BREACHED
    status = "budget"

    def __init__(self, breaches: list[dict], measured: dict | None = None):
        self.breaches = breaches
        # what the build measured, shaped as a manifest's metrics/memory/delegation/files
        # (an optimizing sweep records a breached point with its values: config/objective.py)
        self.measured = measured or {}
        lines = [
            f"  - {b['message']}"
            if b.get("message")  # a breach that is not a number against a limit (a board's fit)
            else f"  - budget.{b['budget']}: measured {b['measured']:g} {b['unit']}, limit {b['limit']:g} {b['unit']}"
            + (f" (judged: {b['judged']})" if b.get("judged") else "")
            for b in breaches
        ]
        super().__init__("budget breached, nothing stored:\n" + "\n".join(lines))


# Sweep statuses that are not errors: a job that left an artifact.
OK_STATUSES = ("built", "reused", "up_to_date")
# The exit code of a sweep job's status ("crashed": a bug of ours; "incomplete": no result).
EXIT_FOR_STATUS = {
    "config_error": EXIT_CONFIG_ERROR,
    "failed": EXIT_BUILD_FAILED,
    "budget": EXIT_BUDGET_BREACHED,
    "crashed": EXIT_BUILD_FAILED,
    "incomplete": EXIT_BUILD_FAILED,
}


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    status: str
    message: str
    bug: bool = False  # an exception no code of ours raised on purpose: show its traceback


def outcome(exc: BaseException) -> Outcome:
    """The one map from an exception to what the user sees and the sweep records. Hydra's and
    OmegaConf's own refusals are translated first, where they can arise (config/hydra_errors.py)."""
    if isinstance(exc, EthosuError):
        return Outcome(exc.exit_code, exc.status, without_hydra_hints(exc.render()))
    if isinstance(exc, KeyboardInterrupt):
        return Outcome(EXIT_INTERRUPTED, "incomplete", "interrupted; nothing half-written was stored")
    if isinstance(exc, BrokenPipeError):  # the reader of our output stopped reading: nothing to say
        return Outcome(EXIT_BROKEN_PIPE, "incomplete", "")
    return Outcome(EXIT_BUILD_FAILED, "crashed", f"{type(exc).__name__}: {first_line(exc)}", bug=True)


def exit_code_for(statuses: Iterable[str]) -> int:
    """A sweep's exit code: 0 when every job left an artifact, else the code of its failures'
    kind (1 when kinds differ)."""
    codes = {EXIT_FOR_STATUS.get(s, EXIT_BUILD_FAILED) for s in statuses if s not in OK_STATUSES}
    return 0 if not codes else codes.pop() if len(codes) == 1 else EXIT_BUILD_FAILED


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name if it has none)."""
    lines = [line for line in without_hydra_hints(str(exc)).splitlines() if line.strip()]
    return lines[0].strip()[:limit] if lines else type(exc).__name__


# Hydra's advice to set HYDRA_FULL_ERROR: ethosu-build already sets it (app.py) and its
# messages carry the cause, so the advice only misleads.
_HYDRA_HINTS = re.compile(
    r",? ?set env var HYDRA_FULL_ERROR=1 to see chained exception\.?|\s*Set the environment variable "
    r"HYDRA_FULL_ERROR=1 for a complete stack trace\.?"
)


def without_hydra_hints(text: str) -> str:
    return _HYDRA_HINTS.sub("", text)


def accepted(values: Iterable[object], bad: object | None = None, limit: int = 12) -> str:
    """'accepted: a, b, c' plus 'did you mean x?' when a close match exists."""
    shown = [("null" if v is None else str(v)) for v in values]
    text = "accepted: " + ", ".join(shown[:limit]) + (", ..." if len(shown) > limit else "")
    hint = did_you_mean(bad, shown) if isinstance(bad, str) else ""
    return f"{text}{hint}"


def did_you_mean(bad: str, candidates: Iterable[str], n: int = 3) -> str:
    # never the key itself: a key the schema has but the config lacks is not a misspelling
    close = [c for c in difflib.get_close_matches(bad, list(candidates), n=n + 1, cutoff=0.6) if c != bad][:n]
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"


def report(prog: str, exc: BaseException) -> int:
    """Print what the user needs to know about `exc` on stderr and return the exit code:
    the one place both CLIs turn an exception into an exit (a bug keeps its traceback)."""
    import sys
    import traceback

    result = outcome(exc)
    if result.bug:
        traceback.print_exception(exc)
        print(
            f"{prog}: crashed (a bug in ethosu-build; the traceback above says where): {result.message}",
            file=sys.stderr,
        )
    elif result.message:
        from .files import printable  # a message may quote a planted file name: no escapes reach the terminal

        print(printable(f"{prog}: {result.message}"), file=sys.stderr)
    if isinstance(exc, BrokenPipeError) and sys.stdout is not None:
        import os

        # Python flushes stdout at exit: into the closed pipe, that would fail once more.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return result.exit_code
