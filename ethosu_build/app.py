"""`ethosu-build` and `ethosu-search`: plain @hydra.main apps (so --help, --cfg, -m and every
launcher work), and the console-script wrappers that turn errors into exit codes through
errors.report, the one map both CLIs share (docs/artifacts.md, "Exit codes").

Every job also leaves its result in its Hydra output dir (sweep/summary.py); in a multirun a
failed job is recorded and the sweep goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import background, numerics, run_dirs, tracking
from .config import help as config_help
from .config.hydra_errors import from_hydra, missing_interpolation
from .config.validate import search_config, store_root_issue, validate
from .errors import ConfigError, ConfigIssue, EthosuError, first_line, outcome, report
from .files import atomic_write_json
from .fingerprint import canonical_json
from .pipeline.build import build
from .search.search import Search
from .store.provenance import recipe_file
from .sweep import front as sweep_front
from .sweep import summary as sweep

log = logging.getLogger("ethosu_build")
# Before anything loads torch (in this process and in the sweep workers it starts): every
# build computes on the same kernels (numerics.py).
numerics.pin()


def _store_folder(root) -> str:
    """`${ethosu.store:${store.root}}` in hydra.run.dir / hydra.sweep.dir: the store root
    checked (Hydra creates these folders before any code of ours runs) and `~` expanded."""
    problem = store_root_issue(root)
    if problem:
        raise ConfigError(ConfigIssue("store.root", problem))
    return os.path.expanduser(root)


# Registered on import: every process that runs the task function (joblib, Ray, submitit
# workers unpickle it from this module) resolves hydra.run.dir / hydra.sweep.dir with them.
OmegaConf.register_new_resolver("ethosu.store", _store_folder, replace=True)
# A run dir of its own per process: two builds started in the same second would otherwise
# share one build.log, and a config error's run dir could not be removed safely.
OmegaConf.register_new_resolver("ethosu.pid", os.getpid, replace=True)
# `--help`: the composed config with each key's meaning (conf/hydra/help/, config/help.py).
OmegaConf.register_new_resolver("ethosu.help", config_help.render, replace=True)


class _Refused(BaseException):
    """An error found before Hydra creates the run dir. Hydra turns an Exception from a
    callback into a warning and runs the job anyway, so this one is a BaseException that
    _main() unwraps."""

    def __init__(self, error: EthosuError):
        super().__init__(error.render())
        self.error = error


class PreRunCheck(Callback):
    """Validates the composed config before Hydra creates the run dir: a config error leaves
    nothing in the store. (A sweep's jobs are checked one by one, as they run; before the
    first, the sweep dir and the launcher's settings.)"""

    def on_run_start(self, config: DictConfig, config_name=None, **kwargs) -> None:
        try:
            background.mode()  # a bad ETHOSU_BUILD_BACKGROUND, before Hydra makes anything
            container = _resolve(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
            if config_name == "search":
                search_config(container.pop("search", None))
            cfg = validate(container, default_name=config.hydra.runtime.choices.get("recipe"))
            run_dirs.check(config, "hydra.run.dir", cfg.store.root)
            state = sweep.RunState.current()
            if state is not None:  # the build of this run takes it as it is: one validation per run
                state.checked = (canonical_json(container), cfg)
        except EthosuError as exc:
            raise _Refused(exc) from exc

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            run_dirs.check_launcher(config)
            run_dirs.check(config, "hydra.sweep.dir", OmegaConf.select(config, "store.root"))
        except EthosuError as exc:
            raise _Refused(exc) from exc


def _resolve(cfg: DictConfig) -> dict:
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as exc:  # an interpolation that cannot be resolved
        key = str(getattr(exc, "full_key", None) or "config")
        issue = missing_interpolation(exc) or ConfigIssue(key, first_line(exc))
        raise ConfigError(issue) from exc


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def build_app(cfg: DictConfig) -> float | list[float | None] | None:
    """Builds; returns the `objective` values (one float for one metric), so that a Hydra
    sweeper that optimizes can drive it, or None (no objective, or a job that stored nothing:
    its result.json says why and what it measured)."""
    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    run_dir = Path(hc.runtime.output_dir)
    container = None
    try:
        container = _resolve(cfg)
        result = _build(container, hc, overrides)
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # no result: the summary says "incomplete"
            raise
        failure = outcome(from_hydra(exc) or exc)
        if hc.mode != RunMode.MULTIRUN:
            if failure.status == "config_error":
                # The message says it all; a config error leaves nothing in the store (this
                # run dir is this process's own: hydra.run.dir names the pid).
                _remove_run_dir(run_dir, cfg)
            else:
                row = sweep.failure_row(failure, exc, overrides, container)
                atomic_write_json(run_dir / sweep.RESULT, row)
                tracking.track_job(container, hc, overrides, row, exc=exc)
            return _hold(exc)
        row = sweep.failure_row(failure, exc, overrides, container)
        atomic_write_json(run_dir / sweep.RESULT, row)
        tracking.track_job(container, hc, overrides, row, exc=exc)
        # In a sweep a failed configuration is a result, not the end: the other jobs run and
        # the summary is written; main() exits non-zero afterwards.
        if failure.bug:
            log.error("job %s crashed", hc.job.num, exc_info=exc)
        else:
            log.error("job %s (%s) %s: %s", hc.job.num, " ".join(overrides), failure.status, failure.message)
        return None
    row = sweep.success_row(result, overrides, container)
    atomic_write_json(run_dir / sweep.RESULT, row)
    tracking.track_job(container, hc, overrides, row, result=result)
    values = row.get("objective")
    return values[0] if values is not None and len(values) == 1 else values


def _remove_run_dir(run_dir: Path, cfg: DictConfig) -> None:
    root = OmegaConf.select(cfg, "store.root")
    runs = Path(os.path.expanduser(root)).resolve() / "runs" if store_root_issue(root) is None else None
    if runs is not None and runs in run_dir.resolve().parents:
        shutil.rmtree(run_dir, ignore_errors=True)
        for empty in (run_dir.parent, runs):  # the date folder and runs/, unless others use them
            try:
                empty.rmdir()
            except OSError:
                break


def _build(container: dict, hc, overrides: list[str]):
    recipe = hc.runtime.choices.get("recipe")
    sources = [f"{src.schema}://{src.path}" for src in hc.runtime.config_sources]
    state = sweep.RunState.current()
    checked = state.checked if state is not None else None
    validated = checked[1] if checked is not None and checked[0] == canonical_json(container) else None
    result = build(
        container, recipe=recipe, recipe_path=recipe_file(recipe, sources), cli_overrides=overrides, validated=validated
    )
    a = result.artifact
    if result.up_to_date:
        log.info(
            "up to date: %s (build key %s), no stage ran [%.2f s]", a.id, a.manifest()["build_key"][:12], result.seconds
        )
    elif not result.created:
        log.info("identical to %s, reused [%.1f s]", a.id, result.seconds)
    else:
        m = a.manifest()
        d = m["delegation"]
        log.info(
            "built %s -> %s (%d bytes; %d NPU partition(s), %d CPU op(s)) [%.1f s]",
            a.id,
            a.path / "model.pte",
            m["files"]["model.pte"]["size"],
            d["npu_partitions"],
            d["cpu_op_count"],
            result.seconds,
        )
    return result


def _hold(exc: BaseException) -> None:
    """The failure of a single run, held for _main in this command's RunState: raised through
    Hydra, it would print its own "Error executing job with overrides" line above ours. Raised
    where no command runs to report it (the app called without _main)."""
    state = sweep.RunState.current()
    if state is None:
        raise exc
    state.held.append(exc)


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def search_app(cfg: DictConfig) -> None:
    """`ethosu-search`: the build config plus `search.*` (search/)."""
    try:
        _search(cfg)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 (reported by _main, not Hydra)
        _hold(exc)


def _search(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    container = _resolve(cfg)
    options = search_config(container.pop("search", None))
    command = " ".join(["ethosu-search", *hc.overrides.task])
    out = Path(hc.runtime.output_dir)
    result = Search(container, options, dict(hc.runtime.choices), out, command).run()
    log.info(
        "search: %d configurations measured, %d full builds; front: %s",
        result["points_measured"],
        result["lowerings"],
        ", ".join(p.get("artifact") or p["status"] for p in result["front"]) or "none",
    )
    print((out / "search.md").read_text())
    print(f"results, plot and recipes: {out}")


def main() -> None:
    _main(build_app, "ethosu-build")


def search_main() -> None:
    _main(search_app, "ethosu-search")


def _on_sigint(signum, frame) -> None:
    """Ctrl-C: raise KeyboardInterrupt as Python does, and remember it, so that a stage
    boundary stops the build even if library code caught the exception (pipeline/stage.py)."""
    from .pipeline import stage

    stage.interrupted.set()
    signal.default_int_handler(signum, frame)


def _main(app, prog: str) -> None:
    # Let exceptions reach us instead of Hydra printing them and exiting 1, so that config
    # errors exit 2. (Hydra reads this variable at the moment of the error.)
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        cwd = os.getcwd()
    except FileNotFoundError:  # removed under the command: Hydra and relative paths need it
        sys.exit(report(prog, ConfigError(ConfigIssue("working folder", run_dirs.GONE))))
    # A user's own models (model.factory._target_) import from the launch folder, as they
    # would under `python -m`; console scripts do not put it on sys.path themselves.
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    signal.signal(signal.SIGINT, _on_sigint)
    state = sweep.RunState.begin()  # what Hydra's run hands back to this command (sweep/summary.py)
    try:
        try:
            app()
            if state.held:
                raise state.held.pop()
        finally:
            _summarize_unfinished_sweep(prog, state)
    except SystemExit:
        raise  # Hydra's own exit (--help, --cfg, a usage error it printed)
    except _Refused as exc:
        sys.exit(report(prog, exc.error))
    except BaseException as exc:  # noqa: BLE001 (every exit goes through the one map)
        exc = from_hydra(exc) or exc  # Hydra's and OmegaConf's refusals, in our words
        if isinstance(exc, OSError) and outcome(exc).bug:  # outside a build: Hydra's folders and files
            exc = run_dirs.os_error(exc)  # (Hydra's MissingConfigException is an OSError too: its own words)
        elif not isinstance(exc, (EthosuError, KeyboardInterrupt)) and _raised_by_hydra(exc) and outcome(exc).bug:
            exc = _command_line_error(sys.argv[1:], exc)  # Hydra itself choked on the command line
        sys.exit(report(prog, exc))
    if app is build_app:
        _exit_for_sweep(prog, state.summary)


def _command_line_error(argv: list[str], exc: BaseException) -> ConfigError:
    """Name the override Hydra could not take: a config group (a folder of conf/) takes
    option names, so `overrides=[1]` fails deep inside Hydra with a TypeError."""
    conf = Path(__file__).parent / "conf"
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:  # Hydra's own parser refused it: its message says why
        parsed = []
    for o in parsed:
        group, value = o.key_or_group, o.value()
        values = value if isinstance(value, list) else [value]
        if "." not in group and (conf / group).is_dir() and not all(isinstance(v, str) for v in values):
            options = sorted(p.stem for p in (conf / group).glob("*.yaml"))
            return ConfigError(
                ConfigIssue(
                    group,
                    f"{value!r} is not an option name of the {group} group; accepted: "
                    f"{', '.join(options)} (a list of them where the group allows several)",
                )
            )
    return ConfigError(
        ConfigIssue("command line", f"Hydra could not compose it ({type(exc).__name__}: {first_line(exc)})")
    )


def _summarize_unfinished_sweep(prog: str, state: sweep.RunState) -> None:
    """A sweep stopped before its end (Ctrl-C, a launcher that lost a worker) still gets
    its summary: every job done so far, the rest `incomplete`."""
    folder = state.active
    if folder is None or not folder.is_dir():  # stopped before any job (a config error): nothing to sum up
        return
    state.active = None
    try:
        summary = sweep.summarize(folder)
        print(f"{prog}: sweep stopped early, {summary.line()}; see {folder / sweep.SUMMARY_MD}", file=sys.stderr)
    except Exception as exc:  # the summary must not hide why the sweep stopped
        print(f"{prog}: the sweep's summary could not be written: {exc}", file=sys.stderr)


def _exit_for_sweep(prog: str, summary: sweep.Summary | None) -> None:
    """After a multirun (`summary`: its summary; None after a single run): non-zero when a job
    failed (its kind's code, 1 when kinds differ). In an optimizing sweep, trials over a budget
    or rejected are findings: it exits 0 when it found a feasible front."""
    if summary is not None and summary.optimize:
        print(
            f"{prog}: optimizing sweep finished, {summary.line()}; {sweep_front.last_line(summary)}; "
            f"see {summary.sweep_dir / sweep.SUMMARY_MD}",
            file=sys.stderr,
        )
        if summary.front:
            return
    if summary is not None and summary.failed:
        print(f"{prog}: sweep finished, {summary.line()}; see {summary.sweep_dir / sweep.SUMMARY_MD}", file=sys.stderr)
        for row in summary.failed:
            print(
                f"  - job {row['job']} ({' '.join(row.get('overrides') or [])}): {row['status']}: "
                f"{row.get('error', '')}",
                file=sys.stderr,
            )
        sys.exit(summary.exit_code())


def _raised_by_hydra(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "/hydra/" in tb.tb_frame.f_code.co_filename


if __name__ == "__main__":
    main()
