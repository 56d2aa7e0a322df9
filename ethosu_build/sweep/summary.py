"""Sweeps: one result file per job, and the summary of a sweep dir.

Each job writes `result.json` in its own Hydra job dir, atomically, whether it built or
failed (app.py). `SweepCallback` (registered in conf/config.yaml under hydra.callbacks)
logs a live count of finished jobs and, at the end of the multirun, calls `summarize`,
which writes `summary.csv`, `summary.md` and `pareto.png` in the sweep dir. `summarize`
needs nothing but the files, so `ethosu-artifacts summarize DIR` rebuilds the summary of
any sweep dir, also one whose process was killed: a job dir without a result is a row
marked `incomplete`. Works with every launcher, since jobs only write files.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from ..config import objective
from ..errors import OK_STATUSES as OK
from ..errors import BudgetBreached, exit_code_for
from ..files import atomic_write, atomic_write_json, csv_text, markdown_table
from . import front as sweep_front
from . import plot as sweep_plot
from . import results
from .front import front_recipes, objective_front
from .plot import front, quality_axis

log = logging.getLogger("ethosu_build")

RESULT = "result.json"
PLAN = "sweep.json"  # the number of jobs planned, when the sweeper makes it knowable
SUMMARY_CSV, SUMMARY_MD, PARETO_PNG = "summary.csv", "summary.md", "pareto.png"

COLUMNS = [
    "job",
    "status",
    "overrides",
    "artifact",
    "model",
    "target",
    "scheme",
    "module_overrides",
    "cycles",
    "inference_ms",
    "sram_kib",  # the memory bill's SRAM and flash: what budgets and objectives judge
    "flash_kib",
    "vela_sram_kib",  # Vela's own SRAM figure for its partitions
    "npu_partitions",
    "cpu_ops",
    "float_top1",
    "quantized_top1",
    "accuracy_drop",
    "sqnr_db",
    "tosa_max_lsb",
    "fits",  # on the board (board=NAME): where each pool goes, pipeline/placement.py
    "headroom_kib",
    "objective",
    "recipe",  # an optimizing sweep's front: the recipe that rebuilds the row
    "stages_ran",
    "seconds",
    "host",
    "error",
]


def success_row(result, overrides: list[str], container: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result row of a job that built (or reused) an artifact; `result` is a BuildResult.
    With an `objective` in the config, its values and the budgets' margins (<= 0)."""
    m = result.artifact.manifest()
    gates = [(k, g["limit"], g["measured"]) for k, g in (m.get("budget") or {}).items()]
    cfg = m["config"]
    status = "up_to_date" if result.up_to_date else ("built" if result.created else "reused")
    return {
        "status": status,
        "overrides": overrides,
        "artifact": result.artifact.id,
        "model": cfg["model"]["name"],
        "target": cfg["target"]["accelerator"],
        "scheme": cfg["quantization"]["scheme"],
        "module_overrides": ";".join(f"{n}:{o['scheme']}" for n, o in cfg["overrides"].items()),
        **_measured_columns(m),
        "stages_ran": ",".join(s for s, r in result.stages.items() if r.get("status") == "ran"),
        "seconds": round(result.seconds, 2),
        "error": "",
        **_objective_columns(m, container, gates),
        **_where(),
    }


def _measured_columns(m: dict[str, Any]) -> dict[str, Any]:
    """The figures of a manifest (or of a breached build's measurements, shaped alike)."""
    metrics = m.get("metrics") or {}
    vela, acc = (metrics.get("vela") or {}).get("total") or {}, metrics.get("accuracy") or {}
    tosa, d = metrics.get("tosa_check") or {}, m.get("delegation") or {}
    return {
        "cycles": vela.get("cycles"),
        "inference_ms": vela.get("inference_ms"),
        # One name, one meaning (docs/sweeps.md): the memory bill's, as budget.max_sram_kib and
        # the objective's sram_kib read it; Vela's own figure under its own name.
        "sram_kib": objective.METRICS["sram_kib"].read(m) if m.get("memory") else None,
        "flash_kib": objective.METRICS["flash_kib"].read(m) if m.get("memory") else None,
        "vela_sram_kib": vela.get("sram_kib"),
        "npu_partitions": d.get("npu_partitions"),
        "cpu_ops": d.get("cpu_compute_op_count"),
        "float_top1": acc.get("float_top1"),
        "quantized_top1": acc.get("quantized_top1"),
        "accuracy_drop": acc.get("accuracy_drop"),
        "sqnr_db": acc.get("sqnr_db"),
        "tosa_max_lsb": tosa.get("max_lsb_diff"),
        "fits": (m.get("board") or {}).get("fits"),
        "headroom_kib": objective.board_headroom_kib(m),
    }


def _objective_columns(measured: dict[str, Any], container: dict[str, Any] | None, gates) -> dict[str, Any]:
    """`objective`: the config's objective values, in its order (None: no objective);
    `violations`: per budget set, (measured - limit) / limit, > 0 when breached."""
    pairs = objective.parse((container or {}).get("objective"))[0]
    return {
        "objective": objective.values(measured, pairs) if pairs else None,
        "violations": objective.violations(gates),
    }


def _where() -> dict[str, Any]:
    """Which machine and process ran the job (launchers spread jobs over both)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def failure_row(failure, exc: BaseException, overrides: list[str], container: dict[str, Any] | None) -> dict[str, Any]:
    """The result row of a job that stored nothing (`failure`: errors.outcome of
    `exc`); names what it was building, and for a budget breach what it measured."""
    c = container or {}

    def get(*path):
        node: Any = c
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return node

    overrides_cfg = get("overrides") or {}
    measured = {}
    if isinstance(exc, BudgetBreached):  # measured, then judged: its figures are a finding too
        gates = [(b["budget"], b["limit"], b["measured"]) for b in exc.breaches]
        measured = {**_measured_columns(exc.measured), **_objective_columns(exc.measured, c, gates)}
    return {
        "status": failure.status,
        "overrides": overrides,
        "error": failure.message,
        "model": get("model", "name"),
        "target": get("target", "accelerator"),
        "scheme": get("quantization", "scheme"),
        "module_overrides": ";".join(f"{n}:{o.get('scheme')}" for n, o in overrides_cfg.items() if isinstance(o, dict)),
        **measured,
        **_where(),
    }


# --- summary --------------------------------------------------------------------------------


@dataclass
class Summary:
    sweep_dir: Path
    rows: list[dict[str, Any]]
    planned: int | None = None
    files: list[Path] = field(default_factory=list)
    optimize: dict[str, Any] | None = None  # an optimizing sweep's plan: objective and trials
    front: list[dict[str, Any]] = field(default_factory=list)  # its Pareto front of feasible rows
    recipes: list[Path] = field(default_factory=list)

    def count(self, *statuses: str) -> int:
        return sum(1 for r in self.rows if r["status"] in statuses)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] not in OK]

    def exit_code(self) -> int:
        return exit_code_for(r["status"] for r in self.rows)

    def line(self) -> str:
        """'12 of 12 job(s) done (2 built, 10 up to date), 0 failed': each status in the words
        of the job statuses (docs/sweeps.md); a status no job has is left out."""
        of = f" of {self.planned}" if self.planned else ""
        kinds = ", ".join(f"{n} {s.replace('_', ' ')}" for s in OK if (n := self.count(s)))
        return f"{self.count(*OK)}{of} job(s) done{f' ({kinds})' if kinds else ''}, {len(self.failed)} failed"


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job dir under the sweep dir: Hydra makes .hydra/ in each before the job runs
    (a job killed at once may have the folder and not yet its files)."""
    dirs = {p.parent for p in sweep_dir.rglob(".hydra") if p.is_dir()}
    dirs |= {p.parent for p in sweep_dir.rglob(RESULT)}
    return sorted(dirs, key=lambda d: (len(d.parts), _num(d.name), str(d)))


def is_sweep_dir(folder: Path) -> bool:
    """A hydra.sweep.dir: its plan, or job folders (Hydra's .hydra/, or a result) right in it."""
    if not folder.is_dir():
        return False
    return (folder / PLAN).is_file() or any(
        (d / ".hydra").is_dir() or (d / RESULT).is_file() for d in folder.iterdir() if d.is_dir()
    )


def _num(name: str) -> int:
    return int(name) if name.isdigit() else 1 << 30


def read_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for job_dir in _job_dirs(sweep_dir):
        try:
            row = json.loads((job_dir / RESULT).read_text())
            why = results.row_problem(row)
            error = None if why is None else f"unreadable {RESULT}: {why}"
        except FileNotFoundError:
            error = "no result: the job is still running or its process was killed"
        except (OSError, ValueError) as exc:  # not JSON, not UTF-8, a folder named result.json
            error = f"unreadable {RESULT}: {type(exc).__name__}: {exc}"
        if error is not None:
            row = {"status": "incomplete", "overrides": _overrides_of(job_dir), "error": error}
        row["job"] = str(job_dir.relative_to(sweep_dir))
        rows.append(row)
    return rows


def _overrides_of(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # a job dir Hydra had not finished writing
        return []


def _plan(sweep_dir: Path) -> dict[str, Any]:
    try:
        plan = json.loads((sweep_dir / PLAN).read_text())
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}


def _optimize_plan(sweep_dir: Path) -> dict[str, Any] | None:
    """An optimizing sweep's plan (optimize.py writes it), or None: also when its
    sweep.json does not hold one in that shape (the rows are then summarized as a grid's)."""
    plan = _plan(sweep_dir).get("optimize")
    problem = None if plan is None else results.plan_problem(plan)
    if problem:
        log.warning("%s: %s; summarized as a grid", sweep_dir / PLAN, problem)
    return None if problem else plan


def planned_jobs(sweep_dir: Path) -> int | None:
    try:
        return int(_plan(sweep_dir)["jobs"])
    except (KeyError, TypeError, ValueError):
        return None


def summarize(sweep_dir: Path | str) -> Summary:
    """Collect the job results of a sweep dir and write summary.csv, summary.md, pareto.png."""
    sweep_dir = Path(sweep_dir)
    summary = Summary(sweep_dir, read_rows(sweep_dir), planned_jobs(sweep_dir), optimize=_optimize_plan(sweep_dir))
    if summary.optimize:
        summary.front = objective_front(summary.rows, summary.optimize["objective"])
        summary.recipes = front_recipes(sweep_dir, summary.front, summary.optimize)
    atomic_write(sweep_dir / SUMMARY_CSV, csv_text(summary.rows, COLUMNS, _cell))
    atomic_write(sweep_dir / SUMMARY_MD, _markdown(summary))
    summary.files = [sweep_dir / SUMMARY_CSV, sweep_dir / SUMMARY_MD, *summary.recipes]
    chart = (
        sweep_plot.objective_chart(summary.rows, summary.front, summary.optimize)
        if summary.optimize
        else sweep_plot.grid_chart(summary.rows)
    )
    if chart is not None:
        atomic_write(sweep_dir / PARETO_PNG, sweep_plot.png(chart))
        summary.files.append(sweep_dir / PARETO_PNG)
    return summary


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _markdown(summary: Summary) -> str:
    rows = summary.rows
    lines = [
        f"# Sweep summary: {summary.sweep_dir}",
        "",
        summary.line() + ".",
        "",
        "SRAM and flash KiB: the memory bill (what the firmware reserves, per region of the memory mode), "
        "the figures budget.max_sram_kib/max_flash_kib and the objective judge; summary.csv's vela_sram_kib "
        "is Vela's own SRAM figure.",
        "",
    ]
    if summary.optimize:
        on_front = {id(r) for r in summary.front}
        lines += sweep_front.markdown_lines(summary)
    else:
        axis = quality_axis(rows)
        on_front = {id(r) for r in front(rows, axis[0])} if axis else set()
        if axis:
            lines += [f"Pareto front (inference time vs {axis[1]}) marked with *.", ""]
    headers = [
        "job",
        "status",
        "overrides",
        "artifact",
        "cycles",
        "ms",
        "SRAM KiB",
        "flash KiB",
        "CPU ops",
        "top-1",
        "SQNR dB",
        "objective",
        "error",
    ]
    boards = any(r.get("fits") is not None for r in rows)  # a sweep over boards: does each fit, with what room
    if boards:
        headers[-2:-2] = ["fits", "headroom KiB"]
    table = [
        [
            f"{r['job']}{' *' if id(r) in on_front else ''}",
            r["status"],
            r.get("overrides"),
            r.get("artifact"),
            r.get("cycles"),
            r.get("inference_ms"),
            r.get("sram_kib"),
            r.get("flash_kib"),
            r.get("cpu_ops"),
            r.get("quantized_top1"),
            r.get("sqnr_db"),
            *([r.get("fits"), r.get("headroom_kib")] if boards else []),
            r.get("objective"),
            _cell(r.get("error"))[:300],
        ]
        for r in rows
    ]
    return "\n".join(lines) + markdown_table(headers, table, _cell) + "\n"


# --- Hydra callback ---------------------------------------------------------------------------


@dataclass
class RunState:
    """What a command's Hydra run hands back to the command (app._main): the sweep it started
    and has not ended, the summary of the one it ended, a single run's failure.

    Hydra makes SweepCallback from the config (hydra.callbacks) and calls the task function
    with the config alone, so the command has no way to pass either of them an object. It
    makes one RunState when it starts (`RunState.begin()`), and the callback and the task
    function reach it through `RunState.current()`: the one piece of process state, holding
    the command this process runs (and the pre-run check, also made by Hydra, hands the
    build its validated config through it) (a second `begin()`, as tests make, replaces it). Nothing in
    it travels back from a launcher's worker processes: their jobs hand back only the files
    they write."""

    active: Path | None = None  # a multirun started and not ended: the command summarizes it if it stops early
    summary: Summary | None = None  # the multirun that ended: the command's exit code
    held: list[BaseException] = field(default_factory=list)  # a failure the command reports, not Hydra
    # The config the pre-run check validated (app.PreRunCheck), with the canonical JSON of the
    # container it came from: the build of the same container takes it (one validation a run).
    checked: tuple[str, Any] | None = None

    _current: ClassVar[RunState | None] = None

    @classmethod
    def begin(cls) -> RunState:
        RunState._current = cls()
        return RunState._current

    @classmethod
    def current(cls) -> RunState | None:
        return RunState._current


def _sweep_dir(config) -> Path:
    return Path(str(config.hydra.sweep.dir))


def _count_planned(config) -> int | None:
    """How many jobs the basic sweeper will launch (product of the sweep overrides); None for
    other sweepers (Optuna and the like decide as they go)."""
    if not str(config.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    try:
        args = list(config.hydra.overrides.task)
        args += [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
        total = 1
        for o in OverridesParser.create().parse_overrides(args):
            if o.is_sweep_override():
                total *= len(list(o.sweep_string_iterator()))
        return total
    except Exception:  # an override form we do not count: the summary still says "done"
        return None


class SweepCallback(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        state = RunState.current()
        try:
            folder = _sweep_dir(config)
        except Exception:  # a bad store.root: the launcher reports it as a config error
            return
        if state is not None:
            state.active, state.summary = folder, None
        from .. import tracking  # its parent run exists before the first job

        tracking.start_sweep(config, folder)
        planned = _count_planned(config)
        if planned is not None:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(folder / PLAN, {"jobs": planned})

    def on_job_end(self, config, job_return, **kwargs) -> None:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        sweep_dir = _sweep_dir(config)
        rows = read_rows(sweep_dir)
        done = sum(1 for r in rows if r["status"] in OK)
        failed = sum(1 for r in rows if r["status"] not in OK + ("incomplete",))
        planned = planned_jobs(sweep_dir)
        log.info("sweep: %d%s job(s) done, %d failed", done, f"/{planned}" if planned else "", failed)

    def on_multirun_end(self, config, **kwargs) -> None:
        state = RunState.current()
        if state is not None:
            state.active = None
        _stop_idle_workers()
        summary = summarize(_sweep_dir(config))
        if state is not None:
            state.summary = summary
        from .. import tracking

        tracking.end_sweep(config, summary)
        log.info("sweep summary: %s -> %s", summary.line(), summary.sweep_dir / SUMMARY_MD)


def _stop_idle_workers() -> None:
    """Every job has returned, so joblib's loky workers hold nothing but torch. Left alone,
    loky stops them at interpreter exit, and each spends 1-2 s tearing torch down while the
    command waits; stop them at once instead (loky's own shutdown(kill_workers=True)).
    pipeline/stage.py keeps tqdm from giving workers a named semaphore that would then be reported
    as leaked."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(module, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
