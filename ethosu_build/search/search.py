"""Hardware-aware mixed precision: which modules get 16-bit activations.

`ethosu-search` (docs/search.md) takes a build config plus `search.*`:

1. Two real builds: the config as given (uniform base scheme) and with every candidate module
   at `search.scheme`. Their Vela per-layer CSVs give each module's cycles under both schemes
   (layers matched to modules by MAC count, in execution order), so each module's cost is
   measured, not guessed; any other cycles stay as they are.
2. Sensitivity: per candidate, the quantize stage with that module alone at `search.scheme`
   (cached like any build's quantize stage) and float-vs-quantized metrics in PyTorch. No
   lowering: a candidate costs one calibration.
3. Greedy: add modules best gain-per-cycle first, measuring each prefix (quick answer: the
   first one that meets the goal); optionally an Optuna NSGA-II search over subsets.
4. The Pareto front of (estimated cycles, SQNR) is built for real, each point with its
   artifact and a recipe that rebuilds it. Lowerings: 2 + the points built.

Candidates or points that fail (a quantizer or Vela rejection) are recorded and skipped.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from ..config.schema import SearchConfig
from ..config.validate import validate
from ..errors import BudgetBreached, BuildError, ConfigError, first_line
from ..files import atomic_write, atomic_write_json
from ..pipeline import budgets, evaluate
from ..pipeline.build import build, quantized_model
from ..pipeline.model_checks import check_model, load_model
from ..sweep import recipes
from . import report
from .points import Point, candidates, check_modules, known_cycles, layer_cycles, layer_macs, pareto, spread

log = logging.getLogger(__name__)


class Search:
    def __init__(
        self, container: dict[str, Any], search: SearchConfig, choices: dict[str, Any], out_dir: Path, command: str
    ):
        self.container, self.search, self.choices, self.out, self.command = container, search, choices, out_dir, command
        self.cfg = validate(container)
        self.points: dict[tuple[str, ...], Point] = {}
        self.model = None  # the float model, loaded and checked once by run()
        self.delta: dict[str, float] | None = None  # extra cycles per candidate, once measured
        self.base_cycles = 0.0
        self.float_top1: float | None = None
        self.builds = 0  # full lowerings this search ran (cache hits included)

    # --- configs ----------------------------------------------------------------------------

    def container_for(self, modules: tuple[str, ...]) -> dict[str, Any]:
        c = copy.deepcopy(self.container)
        entries = c.setdefault("overrides", {}) or {}
        for m in modules:
            entries[f"search_{m.replace('.', '_')}"] = {"module_name": m, "scheme": self.search.scheme}
        c["overrides"] = entries
        return c

    # --- measuring ------------------------------------------------------------------------

    def measure(self, modules: tuple[str, ...]) -> Point:
        """SQNR / top-1 of the model with `modules` at search.scheme: quantize stage (cached)
        and PyTorch evaluation; no lowering."""
        modules = tuple(sorted(modules))
        if modules in self.points:
            return self.points[modules]

        point = Point(modules, est_cycles=self.estimate(modules))
        try:
            cfg = validate(self.container_for(modules))
            model, quantized, batched, samples = quantized_model(cfg, self.model)
            acc = evaluate.compare(model, quantized, samples, batched, cfg.evaluation.batch_size)
            point.sqnr_db, point.top1 = acc["sqnr_db"], acc["quantized_top1"]
            self.float_top1 = acc["float_top1"]
        except Exception as exc:  # a rejected candidate (config, quantizer) is a finding, not the end
            point.status, point.error = "failed", f"{type(exc).__name__}: {first_line(exc)}"
            log.warning("search: %s failed: %s", " ".join(modules) or "base", point.error)
        self.points[modules] = point
        return point

    def estimate(self, modules: tuple[str, ...]) -> float | None:
        if self.delta is None:
            return None
        return self.base_cycles + sum(self.delta.get(m, 0.0) for m in modules)

    def build_point(self, modules: tuple[str, ...], name: str, judged: bool = True):
        """A real build (lower + Vela, or the store's identical artifact) named `name`. The
        two uniform builds measure costs (judged=False): they are built without the budgets,
        which judge them afterwards (judge()), so a breach marks them, never ends the search."""
        self.builds += 1
        container = self.container_for(modules)
        container["name"] = name
        if not judged:
            container["budget"] = {}
        return build(container)

    def judge(self, p: Point, result) -> None:
        """The budgets on a point built without them: a breach makes it infeasible."""
        m = result.artifact.manifest()
        try:
            budgets.check(self.cfg.budget, m["delegation"], m["metrics"]["vela"], m["metrics"]["accuracy"], m["memory"])
        except BudgetBreached as exc:
            self._infeasible(p, exc)

    def _infeasible(self, p: Point, exc: BudgetBreached) -> None:
        p.status = "infeasible"
        p.error = "; ".join(
            f"budget.{b['budget']}: measured {b['measured']:g} {b['unit']}, limit {b['limit']:g}" for b in exc.breaches
        )
        log.warning("search: %s is infeasible: %s", " ".join(p.modules) or "base", p.error)

    # --- the search -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        s, cfg = self.search, self.cfg
        model = self.model = load_model(cfg)
        check_model(cfg, model)  # once: every candidate differs only in its overrides
        check_modules(s, [n for n, _ in model.named_modules() if n])
        self.groups = candidates(model, s)
        names = tuple(self.groups)
        log.info("search: %d candidates (%s)", len(names), ", ".join(names))

        base, uniform, uniform_error = self._measure_costs(names)  # 1. the two uniform builds
        reference, top, sens = self._sensitivity(names, base, uniform, uniform_error)  # 2.
        float_top1 = self.float_top1
        greedy, quick = self._greedy(sens, reference, float_top1)  # 3.
        if s.trials:  # 4. optional Optuna multi-objective search over subsets
            self._optuna(names)
        built = self._front(names, quick, reference, top)  # 5.
        return self.report(sens, greedy, quick, built, reference, top, float_top1)

    def _measure_costs(self, names: tuple[str, ...]):
        """1. The two uniform builds (the config as given; every candidate at search.scheme)
        and the extra cycles of each candidate (self.delta). Returns (base, uniform,
        uniform_error): uniform is None when that build failed, uniform_error then says why."""
        s, cfg, model = self.search, self.cfg, self.model
        base = self.build_point((), cfg.name, judged=False)
        self.base_cycles = base.artifact.manifest()["metrics"]["vela"]["total"]["cycles"]
        uniform, uniform_error = None, None
        try:
            uniform = self.build_point(names, f"{cfg.name}_all_{s.scheme}", judged=False)
        except (BuildError, BudgetBreached) as exc:  # e.g. Vela rejects a16w8 on U55; or it does not fit the board
            uniform_error = first_line(exc)
            log.warning(
                "search: the build with every candidate at %s failed (%s); per-module costs are unknown, "
                "candidates are ranked by SQNR gain alone and points judged by their own builds",
                s.scheme,
                uniform_error,
            )
        calls = layer_macs(model, cfg.model.input_specs())
        low, _ = layer_cycles(base.artifact.path / "vela" / "per_layer.csv", calls)
        high, _ = layer_cycles(uniform.artifact.path / "vela" / "per_layer.csv", calls) if uniform else (low, 0.0)
        measured = {c: sum(high.get(n, 0.0) - low.get(n, 0.0) for n in leaves) for c, leaves in self.groups.items()}
        self.cost_source = {
            c: uniform is not None and all(n in low and n in high for n in leaves) for c, leaves in self.groups.items()
        }
        # Layers matched to no module (rescales, adds, pooling) change too; share their change
        # out in proportion, so that the estimate of "all candidates" is the real build's.
        all_cycles = uniform.artifact.manifest()["metrics"]["vela"]["total"]["cycles"] if uniform else self.base_cycles
        total = sum(measured.values())
        scale = (all_cycles - self.base_cycles) / total if total > 0 else 1.0
        self.delta = {c: d * scale for c, d in measured.items()}
        return base, uniform, uniform_error

    def _sensitivity(self, names: tuple[str, ...], base, uniform, uniform_error: str | None):
        """2. The uniform points measured and judged, and each candidate alone at search.scheme.
        Returns (reference, top, the sensitivity rows)."""
        reference = self.measure(())
        self._record_build(reference, base)
        self.judge(reference, base)
        top = self.measure(names)
        if uniform is not None:
            self._record_build(top, uniform)
            self.judge(top, uniform)
        else:
            top.status, top.error = "failed", uniform_error
        sens = []
        for c in names:
            p = self.measure((c,))
            gain = None if p.sqnr_db is None or reference.sqnr_db is None else p.sqnr_db - reference.sqnr_db
            sens.append(
                {
                    "module": c,
                    "layers": len(self.groups[c]),
                    "sqnr_db": p.sqnr_db,
                    "sqnr_gain_db": gain,
                    "top1": p.top1,
                    "delta_cycles": self.delta[c],
                    "cost_measured": self.cost_source[c],
                    "status": p.status,
                    "error": p.error,
                }
            )
        return reference, top, sens

    def _greedy(self, sens: list[dict[str, Any]], reference: Point, float_top1: float | None):
        """3. Greedy: best gain per cycle first, each prefix measured. Returns (the prefixes'
        points, the quick answer: the first configuration, from uniform base upwards, meeting
        the goal, or None)."""
        ranked = sorted(
            (r for r in sens if r["status"] == "ok"),
            key=lambda r: -(r["sqnr_gain_db"] or 0.0) / max(r["delta_cycles"], 1.0),
        )
        greedy, chosen = [], ()
        quick = reference if self._meets_goal(reference, float_top1) else None
        for r in ranked:
            chosen = chosen + (r["module"],)
            p = self.measure(chosen)
            greedy.append(p)
            if quick is None and p.status == "ok" and self._meets_goal(p, float_top1):
                quick = p
        return greedy, quick

    def _front(self, names: tuple[str, ...], quick: Point | None, reference: Point, top: Point) -> list[Point]:
        """5. The front, built for real. The estimate misses the int8/int16 conversions around
        a chosen module, so after each round the front is recomputed with Vela's cycles for
        the points built, and its unbuilt points are built, until it is all built or
        search.front points have been. Returns the mixed points built."""
        s = self.search
        mixed = [p for p in self.points.values() if 0 < len(p.modules) < len(names)]
        built: list[Point] = []
        if quick is not None and quick in mixed:
            self._build_front_point(quick, built)
        uniform = [p for p in (reference, top) if "cycles" in p.built]  # a mixed point they dominate is no answer
        while len(built) < s.front:
            front = pareto([p for p in mixed + uniform if s.max_cycles is None or known_cycles(p) <= s.max_cycles])
            todo = [p for p in front if p in mixed and "cycles" not in p.built]
            if not todo:
                break
            for p in spread(todo, s.front - len(built)):
                self._build_front_point(p, built)
        for p in pareto([p for p in built + uniform if "cycles" in p.built]):
            if p in built:
                p.built["on_front"] = True
        return built

    def _build_front_point(self, p: Point, built: list[Point]) -> None:
        name = f"{self.cfg.name}_mixed{len(built) + 1}"
        built.append(p)
        try:
            result = self.build_point(p.modules, name)
            self._record_build(p, result)
            p.built["recipe"] = self.write_recipe(name, p)
        except BudgetBreached as exc:  # measured, over budget: not an answer, and the search goes on
            p.built["cycles"] = exc.measured.get("metrics", {}).get("vela", {}).get("total", {}).get("cycles")
            self._infeasible(p, exc)
        except (ConfigError, BuildError) as exc:  # e.g. Vela rejects a16w8 there: recorded, skipped
            p.status, p.error = "failed", first_line(exc)
            log.warning("search: building %s failed: %s", " ".join(p.modules), p.error)

    def _record_build(self, p: Point, result) -> None:
        m = result.artifact.manifest()
        v = m["metrics"]["vela"]["total"]
        p.built.update(
            {
                "artifact": result.artifact.id,
                "cycles": v["cycles"],
                "sram_kib": v["sram_kib"],
                "pte_sha256": m["files"]["model.pte"]["sha256"],
                "npu_partitions": m["delegation"]["npu_partitions"],
            }
        )

    def _meets_goal(self, p: Point, float_top1: float | None) -> bool:
        s = self.search
        if (s.max_accuracy_drop is None and s.min_sqnr_db is None) or p.status != "ok":  # infeasible: no answer
            return False
        ok = True
        if s.max_accuracy_drop is not None:
            ok &= p.top1 is not None and float_top1 is not None and float_top1 - p.top1 <= s.max_accuracy_drop
        if s.min_sqnr_db is not None:
            ok &= p.sqnr_db is not None and p.sqnr_db >= s.min_sqnr_db
        return ok

    def _optuna(self, names: tuple[str, ...]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=self.search.seed)
        )
        for p in list(self.points.values()):  # start from what is already measured
            if p.status == "ok":
                study.add_trial(
                    optuna.trial.create_trial(
                        params={n: n in p.modules for n in names},
                        distributions={n: optuna.distributions.CategoricalDistribution([False, True]) for n in names},
                        values=[p.sqnr_db, p.est_cycles],
                    )
                )

        def objective(trial):
            picked = tuple(n for n in names if trial.suggest_categorical(n, [False, True]))
            p = self.measure(picked)
            if p.status != "ok":
                raise optuna.TrialPruned(p.error)
            return p.sqnr_db, p.est_cycles

        study.optimize(objective, n_trials=self.search.trials)

    # --- output -----------------------------------------------------------------------------

    def write_recipe(self, name: str, p: Point) -> str:
        """A recipe that rebuilds the point: the same group choices, every build key pinned
        to its resolved value, the overrides in order."""
        cfg = validate(self.container_for(p.modules), default_name=name)
        comments = [
            f"Mixed precision found by: {self.command}",
            f"{len(p.modules)} module(s) at {self.search.scheme}: SQNR {p.sqnr_db} dB, top-1 {p.top1}, "
            f"Vela cycles {p.built.get('cycles')} (estimated {p.est_cycles:.0f}).",
        ]
        return str(recipes.write(self.out, name, cfg, self.choices, comments))

    def report(self, sens, greedy, quick, built, reference, top, float_top1) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        result = {
            "command": self.command,
            "scheme": self.search.scheme,
            "candidates": {c: v for c, v in self.groups.items()},
            "float_top1": float_top1,
            "uniform_base": reference.row(),
            "uniform_all": top.row(),
            "sensitivity": sens,
            "greedy": [p.row() for p in greedy],
            "quick_answer": quick.row() if quick is not None else None,
            "front": [p.row() for p in built],
            "points_measured": len(self.points),
            "lowerings": self.builds,
        }
        atomic_write_json(self.out / "search.json", result)
        report.write_csv(self.out / "sensitivity.csv", sens)
        report.write_csv(self.out / "points.csv", [p.row() for p in self.points.values()])
        report.plot_front(self.out / "front.png", list(self.points.values()), built, reference, top)
        report.plot_sensitivity(self.out / "sensitivity.png", sens, self.search.scheme)
        atomic_write(self.out / "search.md", report.markdown(result))
        return result
