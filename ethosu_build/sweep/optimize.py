"""The optimizing sweeper (`hydra/sweeper=optimize`, docs/sweeps.md "Optimizing sweeps"): an
Optuna study on the installed Optuna, driving ordinary ethosu-build jobs through the
configured Hydra launcher, so trials share the stage cache and the store with every other
build and sweep.

- The space: the sweep overrides of the command line and `hydra.sweeper.params`, in Hydra's
  syntax: `a,b` or `choice(a,b)` (categorical), `range(start,stop[,step])` (integers, stop
  excluded, or its values when not integers), `interval(lo,hi)` (numbers; `tag(log, ...)` for a
  log scale). Every value is composed and validated before any trial runs.
- The objective: the task config's `objective` (config/objective.py).
- Budgets are constraints: a breached build is an infeasible trial with its measured values
  and, per budget, by how much it missed (Optuna's constrained samplers learn from it); a
  configuration that Vela, the partitioner or the config rejects is infeasible too (the
  `rejected` constraint), with the worst values.
- `n_trials` counts builds: a point the study proposes again reuses the first result and
  costs nothing; a finite space stops when every point has been built.

The Hydra plugin class is a thin shell in hydra_plugins/ethosu_build_sweeper (Hydra only
instantiates plugins from that package); this module holds the logic and imports Optuna only
inside `run`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..config import objective as obj
from ..config.schema import BudgetConfig
from ..errors import ConfigError, ConfigIssue, first_line
from ..files import atomic_write_json
from . import results

log = logging.getLogger("ethosu_build")

SAMPLERS = ("tpe", "nsga2", "random")
BUDGETS = tuple(f.name for f in dataclasses.fields(BudgetConfig))
REJECTED = "rejected"  # the constraint of a configuration that did not build
OK = ("built", "reused", "up_to_date")
PLAN = "sweep.json"  # sweep.PLAN: the trials and the objective, for the summary


@dataclasses.dataclass
class Settings:
    sampler: str = "tpe"
    seed: int = 0
    n_trials: int = 20
    n_jobs: int = 1
    n_startup_trials: int | None = None
    params: dict[str, str] | None = None

    def issues(self) -> list[ConfigIssue]:
        k = "hydra.sweeper"
        found = []
        if self.sampler not in SAMPLERS:
            accepted = ", ".join(SAMPLERS)
            found.append(ConfigIssue(f"{k}.sampler", f"{self.sampler!r} is not a sampler; accepted: {accepted}"))
        for name in ("n_trials", "n_jobs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                found.append(ConfigIssue(f"{k}.{name}", f"{v!r} is not accepted; accepted: an integer >= 1"))
        s = self.n_startup_trials
        if s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 1):
            found.append(ConfigIssue(f"{k}.n_startup_trials", f"{s!r}: accepted: null or an integer >= 1"))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            found.append(ConfigIssue(f"{k}.seed", f"{self.seed!r} is not a seed; accepted: 0..{2**32 - 1}"))
        return found


# --- the space ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Param:
    key: str
    kind: str  # "choice" | "int" | "float"
    choices: list[str] | None = None  # choice: the override strings, as Hydra encodes them
    low: float | None = None
    high: float | None = None
    step: int | None = None
    log: bool = False

    def values_to_check(self) -> list[str]:
        if self.kind == "choice":
            return list(self.choices or [])
        return [_num(self.low), _num(self.high)]

    def size(self) -> int | None:
        if self.kind == "choice":
            return len(self.choices or [])
        if self.kind == "int":
            return int((self.high - self.low) // (self.step or 1)) + 1
        return None

    def describe(self) -> str:
        if self.kind == "choice":
            return "choice(" + ", ".join(self.choices or []) + ")"
        if self.kind == "int":
            return f"int [{_num(self.low)}, {_num(self.high)}] step {self.step}" + (" log" if self.log else "")
        return f"float [{_num(self.low)}, {_num(self.high)}]" + (" log" if self.log else "")


def _num(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def parse_space(arguments: list[str], params: dict[str, Any] | None) -> tuple[list[str], list[Param]]:
    """(fixed overrides, the swept parameters) from the command line and hydra.sweeper.params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep, RangeSweep, Transformer

    lines = list(arguments) + [f"{k}={v}" for k, v in (params or {}).items()]
    fixed, space = [], []
    for o in OverridesParser.create().parse_overrides(lines):
        if not o.is_sweep_override():
            fixed.append(o.input_line)
            continue
        key, value = o.get_key_element(), o.value()
        if o.is_choice_sweep():
            choices = [str(x) for x in o.sweep_iterator(transformer=Transformer.encode)]
            space.append(Param(key, "choice", choices=choices))
        elif o.is_range_sweep() and isinstance(value, RangeSweep):
            values = list(o.sweep_iterator(transformer=Transformer.encode))
            if not values:
                raise ConfigError(ConfigIssue(key, f"{o.input_line!r} holds no value (stop excluded); accepted: "
                                              "range(start,stop[,step]) with start < stop for a positive step, "
                                              "e.g. range(5,10)"))  # fmt: skip
            if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
                space.append(Param(key, "int", low=value.start, high=int(values[-1]), step=value.step))
            else:
                space.append(Param(key, "choice", choices=[str(v) for v in values]))
        elif o.is_interval_sweep() and isinstance(value, IntervalSweep):
            is_int = "int" in value.tags  # Hydra's interval ends are floats; tag(int, ...) asks for integers
            kind, log_scale = "int" if is_int else "float", "log" in value.tags
            if not value.start < value.end or (log_scale and value.start <= 0):
                need = "0 < low < high (a log scale)" if log_scale else "low < high"
                raise ConfigError(ConfigIssue(key, f"{o.input_line!r} is not an interval to sample; accepted: "
                                              f"interval(low,high) with {need}"))  # fmt: skip
            space.append(Param(key, kind, low=value.start, high=value.end, step=1, log=log_scale))
        else:
            raise ConfigError(ConfigIssue(key, f"{o.input_line!r} is a sweep this sweeper does not take; accepted: "
                                          "a,b / choice(...), range(...), interval(...)"))  # fmt: skip
    return fixed, space


def space_size(space: list[Param]) -> int | None:
    sizes = [p.size() for p in space]
    return None if any(s is None for s in sizes) else math.prod(sizes)


def distributions(space: list[Param]) -> dict[str, Any]:
    import optuna.distributions as d

    out: dict[str, Any] = {}
    for p in space:
        if p.kind == "choice":
            out[p.key] = d.CategoricalDistribution(p.choices)
        elif p.kind == "int":
            out[p.key] = d.IntDistribution(int(p.low), int(p.high), log=p.log, step=1 if p.log else (p.step or 1))
        else:
            out[p.key] = d.FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out


# --- checks before any trial --------------------------------------------------------------------


def check(sweeper, fixed: list[str], space: list[Param]) -> tuple[list[tuple[str, str]], list[ConfigIssue]]:
    """Composes and validates the fixed config and every value of the space (each with the other
    parameters at their first value), and the objective: every problem, before any trial
    runs. Returns the objective and the problems."""
    from hydra.errors import HydraException

    from ..config.validate import validate

    issues: list[ConfigIssue] = []
    first = {p.key: p.values_to_check()[0] for p in space}
    seen: set[tuple[str, str]] = set()  # a problem of the fixed config is named once
    pairs: list[tuple[str, str]] = []
    cases = [(None, None)] + [(p.key, v) for p in space for v in p.values_to_check()]
    for key, value in cases:
        chosen = {**first, **({key: value} if key else {})}
        overrides = [*fixed, *(f"{k}={v}" for k, v in chosen.items())]
        try:
            cfg = sweeper.hydra_context.config_loader.load_sweep_config(sweeper.config, overrides)
        except HydraException as exc:
            issues.append(_composition_issue(sweeper, key, value, exc))
            continue
        container = OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True, throw_on_missing=False
        )
        if key is None:
            pairs, found = obj.parse(container.get("objective"))
            if not found and not pairs:
                found = [ConfigIssue("objective", "null: an optimizing sweep needs one; accepted: e.g. "
                                                  "'objective={inference_ms: min, sqnr_db: max}'")]  # fmt: skip
            issues.extend(found)
        try:
            validate(container, default_name=cfg.hydra.runtime.choices.get("recipe"))
        except ConfigError as exc:
            for i in exc.issues:
                if i.key.startswith("objective") or (i.key, i.message) in seen:
                    continue
                seen.add((i.key, i.message))
                issues.append(ConfigIssue(i.key, f"with {key}={value}: {i.message}") if key else i)
    return pairs, issues


def _composition_issue(sweeper, key: str | None, value: str | None, exc: Exception) -> ConfigIssue:
    if key is not None and "." not in key:  # a config group: name its options
        try:
            options = sweeper.hydra_context.config_loader.get_group_options(key)
        except Exception:
            options = []
        if options and value not in options:
            return ConfigIssue(key, f"{value!r} is not an option of the {key} group; accepted: {', '.join(options)}")
    return ConfigIssue(key or "command line", f"{value!r} cannot be composed: {first_line(exc)}")


# --- the study ------------------------------------------------------------------------------------


def make_sampler(settings: Settings):
    import optuna

    startup = settings.n_startup_trials or max(2, settings.n_trials // 4)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=startup, multivariate=True)
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=settings.seed, population_size=max(2, startup))
    return optuna.samplers.RandomSampler(seed=settings.seed)


@dataclasses.dataclass
class Outcome:
    """A built (or failed) point, as the study is told it."""

    values: list[float]
    constraints: dict[str, float]
    state: str  # feasible | infeasible | rejected
    reason: str
    job: str | None


def outcome_of(row: dict[str, Any], pairs: list[tuple[str, str]]) -> tuple[list[float], dict[str, float], str, str]:
    """(values, constraints, state, reason) of a job's result row (summary.py)."""
    constraints = {b: 0.0 for b in BUDGETS} | {REJECTED: 0.0}
    worst = [math.inf if d == "min" else -math.inf for _, d in pairs]
    values = row.get("objective")
    status = row.get("status")
    if status in OK or status == "budget":
        for name, margin in (row.get("violations") or {}).items():
            constraints[name] = float(margin)
        missing = [n for (n, _), v in zip(pairs, values or [None] * len(pairs)) if v is None]
        if values is None or missing:
            constraints[REJECTED] = 1.0
            return worst, constraints, "rejected", f"not measured: {', '.join(missing) or 'objective'}"
        state = "feasible" if status in OK else "infeasible"
        return [float(v) for v in values], constraints, state, row.get("error") or ""
    constraints[REJECTED] = 1.0
    return worst, constraints, "rejected", f"{status}: {row.get('error') or 'no result'}"


def _checked(sweeper, arguments: list[str]) -> tuple[list[str], list[Param], list[tuple[str, str]]]:
    """(fixed overrides, the space, the objective's (metric, direction) pairs), every issue of
    the settings, the command line and the space at once before any trial (a ConfigError)."""
    problems = sweeper.settings.issues()
    fixed, space = parse_space(arguments, sweeper.settings.params)
    if not space:
        problems.append(ConfigIssue("command line", "no parameter to optimize; accepted: sweep overrides such as "
                                                    "target=choice(ethos-u55-128,ethos-u85-256)"))  # fmt: skip
    pairs, found = check(sweeper, fixed, space)
    if problems + found:
        raise ConfigError(problems + found)
    return fixed, space, pairs


def _record(study, trials: list[dict[str, Any]], space, trial, point: tuple, out: Outcome, repeat_of=None) -> None:
    """Tell the study a trial's outcome and add it to the plan's trials (`repeat_of`: the
    first trial of a point asked again, whose job it reuses)."""
    for name, value in out.constraints.items():
        trial.set_constraint(name, value)
    study.tell(trial, out.values)
    trials.append(
        {
            "trial": trial.number,
            "params": dict(zip([p.key for p in space], point)),
            "job": None if repeat_of is not None else out.job,
            "repeat_of": repeat_of,
            "state": out.state,
            "values": [None if math.isinf(v) else v for v in out.values],
            "constraints": out.constraints,
            "reason": out.reason,
        }
    )


def run(sweeper, arguments: list[str]) -> list[Any]:
    import optuna

    settings: Settings = sweeper.settings
    fixed, space, pairs = _checked(sweeper, arguments)
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        directions=["minimize" if d == "min" else "maximize" for _, d in pairs], sampler=make_sampler(settings)
    )
    dists, size = distributions(space), space_size(space)
    _write_plan(sweep_dir, settings, pairs, space, [], min(settings.n_trials, size or settings.n_trials))
    done: dict[tuple, Outcome] = {}
    trials: list[dict[str, Any]] = []
    asked = 0
    log.info(
        "optimize: %s over %s%s, %d build(s) at most, %s sampler, seed %d",
        ", ".join(f"{n} ({d})" for n, d in pairs),
        " x ".join(p.describe() for p in space),
        f" ({size} points)" if size else "",
        settings.n_trials,
        settings.sampler,
        settings.seed,
    )

    def record(trial, point: tuple, out: Outcome, repeat_of: int | None = None) -> None:
        _record(study, trials, space, trial, point, out, repeat_of)

    launched = 0
    while launched < settings.n_trials and (size is None or len(done) < size) and asked < 50 * settings.n_trials:
        batch: list[tuple[Any, tuple]] = []
        want = min(settings.n_jobs, settings.n_trials - launched)
        while len(batch) < want and asked < 50 * settings.n_trials and (size is None or len(done) + len(batch) < size):
            trial = study.ask(dists)
            asked += 1
            point = tuple(_override_value(trial.params[p.key]) for p in space)
            if point in done:
                record(trial, point, done[point], repeat_of=_first_trial(trials, point, space))
            elif any(point == b[1] for b in batch):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)  # asked twice in one batch: ask again
            else:
                batch.append((trial, point))
        if not batch:
            break
        jobs = [[*fixed, *(f"{p.key}={v}" for p, v in zip(space, point))] for _, point in batch]
        sweeper.validate_batch_is_legal(jobs)
        returns = sweeper.launcher.launch(jobs, initial_job_idx=sweeper.job_idx)
        sweeper.job_idx += len(jobs)
        launched += len(jobs)
        for (trial, point), ret in zip(batch, returns):
            job_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
            row = _read_row(job_dir)
            values, constraints, state, reason = outcome_of(row, pairs)
            done[point] = Outcome(values, constraints, state, reason, _job_name(job_dir, sweep_dir))
            record(trial, point, done[point])
        _write_plan(sweep_dir, settings, pairs, space, trials, launched)
        log.info("optimize: %d/%d build(s), %d feasible", launched, settings.n_trials,
                 sum(1 for o in done.values() if o.state == "feasible"))  # fmt: skip
    _write_plan(sweep_dir, settings, pairs, space, trials, launched)
    return trials


def _job_name(job_dir: Path, sweep_dir: Path) -> str:
    """The job's folder under the sweep dir, as the summary names it (launchers may report it
    absolute while hydra.sweep.dir is relative)."""
    try:
        return str(job_dir.resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        return str(job_dir)


def _override_value(v: Any) -> str:
    return _num(v) if isinstance(v, float) else str(v)


def _first_trial(trials: list[dict[str, Any]], point: tuple, space: list[Param]) -> int | None:
    params = dict(zip([p.key for p in space], point))
    return next((t["trial"] for t in trials if t["params"] == params and t["repeat_of"] is None), None)


def _read_row(job_dir: Path) -> dict[str, Any]:
    try:
        row = json.loads((job_dir / "result.json").read_text())
        problem = results.row_problem(row)
    except (OSError, ValueError) as exc:
        problem = first_line(exc)
    if problem:  # a rejected trial, not the end of the study
        return {"status": "incomplete", "error": f"no readable result.json in {job_dir} ({problem})"}
    return row


def _write_plan(sweep_dir: Path, settings: Settings, pairs, space: list[Param], trials, launched: int) -> None:
    atomic_write_json(
        sweep_dir / PLAN,
        {
            "jobs": launched,
            "optimize": {
                "objective": [list(p) for p in pairs],
                "sampler": settings.sampler,
                "seed": settings.seed,
                "n_trials": settings.n_trials,
                "n_jobs": settings.n_jobs,
                "space": {p.key: p.describe() for p in space},
                "trials": trials,
            },
        },
    )
