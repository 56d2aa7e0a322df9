"""Hardware-aware mixed precision: which modules get 16-bit activations.

`ethosu-search` (see README, "Mixed-precision search") takes a build config plus `search.*`:

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
import csv
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import BuildError, ConfigError, ConfigIssue, accepted

log = logging.getLogger(__name__)

WEIGHT_LAYERS = ("torch.nn.Conv1d", "torch.nn.Conv2d", "torch.nn.ConvTranspose1d", "torch.nn.ConvTranspose2d", "torch.nn.Linear")
SEARCH_SCHEMES = ("a16w8", "int8", "float")  # what a chosen module may get


@dataclass
class SearchConfig:
    modules: Optional[list[str]] = None  # candidates; null: every Conv/Linear module
    depth: Optional[int] = None  # group candidates by the first `depth` parts of their names
    scheme: str = "a16w8"  # the scheme a chosen module gets
    max_accuracy_drop: Optional[float] = None  # goal of the quick answer, points below float
    min_sqnr_db: Optional[float] = None  # or this SQNR against float
    max_cycles: Optional[float] = None  # points over this Vela cycle budget are not built
    trials: int = 0  # Optuna NSGA-II trials after the greedy pass (0: greedy only)
    front: int = 4  # at most this many mixed configurations are built
    seed: int = 0


@dataclass
class Point:
    """One set of modules at search.scheme, measured."""

    modules: tuple[str, ...]
    sqnr_db: Optional[float] = None
    top1: Optional[float] = None
    est_cycles: Optional[float] = None
    status: str = "ok"
    error: Optional[str] = None
    built: dict[str, Any] = field(default_factory=dict)  # artifact id, real cycles, SRAM, ...

    def row(self) -> dict[str, Any]:
        return {"modules": " ".join(self.modules) or "-", "n": len(self.modules), "sqnr_db": self.sqnr_db, "top1": self.top1,
                "est_cycles": self.est_cycles, "status": self.status, "error": self.error, **self.built}


def check_modules(search: SearchConfig, module_names: list[str]) -> None:
    issues = [
        ConfigIssue(f"search.modules.{i}", f"{name!r} not found in the model; modules include {', '.join(module_names[:8])}")
        for i, name in enumerate(search.modules or []) if name not in module_names
    ]
    if issues:
        raise ConfigError(issues)


def candidates(model, search: SearchConfig) -> dict[str, list[str]]:
    """Candidate name -> the weight layers (leaf Conv/Linear module names) it covers."""
    from .quantize import import_class

    kinds = tuple(import_class(k) for k in WEIGHT_LAYERS)
    leaves = [n for n, m in model.named_modules() if n and isinstance(m, kinds)]
    if search.modules:
        return {c: [n for n in leaves if n == c or n.startswith(c + ".")] or [c] for c in search.modules}
    groups: dict[str, list[str]] = {}
    for n in leaves:
        key = ".".join(n.split(".")[: search.depth]) if search.depth else n
        groups.setdefault(key, []).append(n)
    return groups


def layer_macs(model, input_shape: list[int]) -> list[tuple[str, int]]:
    """(leaf module, MACs) for each Conv/Linear call, in execution order."""
    import torch

    from .quantize import import_class

    kinds = tuple(import_class(k) for k in WEIGHT_LAYERS)
    calls: list[tuple[str, int]] = []

    def hook(name):
        def fn(mod, inputs, out):
            if isinstance(mod, torch.nn.Linear):
                macs = mod.in_features * out.numel()
            elif isinstance(mod, torch.nn.modules.conv._ConvTransposeNd):  # every input element scatters a kernel
                macs = inputs[0].numel() * (mod.out_channels // mod.groups) * math.prod(mod.kernel_size)
            else:  # convolution: every output element sums (in_channels / groups) * kernel
                macs = out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
            calls.append((name, int(macs)))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n and isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return calls


def layer_cycles(per_layer_csv: Path, calls: list[tuple[str, int]]) -> tuple[dict[str, float], float]:
    """Vela cycles per leaf module: each call, in PyTorch's order, takes the first unused
    per-layer row with its MAC count (Vela may schedule a branch, e.g. a residual shortcut,
    before its sibling, but layers of equal size keep their relative order). Returns (cycles
    by module, cycles of rows matched to no module)."""
    with open(per_layer_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f)]
    by_module: dict[str, float] = {}
    used: set[int] = set()
    for name, macs in calls:
        for i, row in enumerate(rows):
            if i not in used and int(float(row["MAC Count"] or 0)) == macs:
                by_module[name] = by_module.get(name, 0.0) + float(row["Op Cycles"])
                used.add(i)
                break
    other = sum(float(r["Op Cycles"]) for i, r in enumerate(rows) if i not in used)
    return by_module, other


def known_cycles(p: Point) -> Optional[float]:
    """Vela's cycles where the point was built, else the estimate."""
    return p.built.get("cycles", p.est_cycles)


def pareto(points: list[Point], cycles=known_cycles) -> list[Point]:
    """Points no other point beats on both cycles (lower) and SQNR (higher)."""
    ok = [p for p in points if p.status == "ok" and p.sqnr_db is not None and cycles(p) is not None]

    def dominated(p: Point) -> bool:
        return any(cycles(q) <= cycles(p) and q.sqnr_db >= p.sqnr_db and (cycles(q) < cycles(p) or q.sqnr_db > p.sqnr_db) for q in ok)

    return sorted((p for p in ok if not dominated(p)), key=cycles)


def spread(front: list[Point], n: int) -> list[Point]:
    """n points spread evenly along the front (by position)."""
    if len(front) <= n:
        return front
    idx = sorted({round(i * (len(front) - 1) / (n - 1)) for i in range(n)}) if n > 1 else [len(front) // 2]
    return [front[i] for i in idx]


class Search:
    def __init__(self, container: dict[str, Any], search: SearchConfig, choices: dict[str, Any], out_dir: Path, command: str):
        from .validate import validate

        self.container, self.search, self.choices, self.out, self.command = container, search, choices, out_dir, command
        self.cfg = validate(container)
        self.points: dict[tuple[str, ...], Point] = {}
        self.model = None  # the float model, loaded and checked once by run()
        self.delta: Optional[dict[str, float]] = None  # extra cycles per candidate, once measured
        self.base_cycles = 0.0
        self.float_top1: Optional[float] = None
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
        from . import build, evaluate
        from .validate import validate

        point = Point(modules, est_cycles=self.estimate(modules))
        try:
            cfg = validate(self.container_for(modules))
            model, quantized, batched, samples = build.quantized_model(cfg, self.model)
            acc = evaluate.compare(model, quantized, samples, batched)
            point.sqnr_db, point.top1 = acc["sqnr_db"], acc["quantized_top1"]
            self.float_top1 = acc["float_top1"]
        except Exception as exc:  # a rejected candidate (config, quantizer) is a finding, not the end
            point.status, point.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("search: %s failed: %s", " ".join(modules) or "base", point.error)
        self.points[modules] = point
        return point

    def estimate(self, modules: tuple[str, ...]) -> Optional[float]:
        if self.delta is None:
            return None
        return self.base_cycles + sum(self.delta.get(m, 0.0) for m in modules)

    def build_point(self, modules: tuple[str, ...], name: str):
        """A real build (lower + Vela, or the store's identical artifact) named `name`."""
        from .build import build

        self.builds += 1
        container = self.container_for(modules)
        container["name"] = name
        return build(container)

    # --- the search -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from .validate import check_model, load_model

        s, cfg = self.search, self.cfg
        model = self.model = load_model(cfg)
        check_model(cfg, model)  # once: every candidate differs only in its overrides
        check_modules(s, [n for n, _ in model.named_modules() if n])
        self.groups = candidates(model, s)
        names = tuple(self.groups)
        log.info("search: %d candidates (%s)", len(names), ", ".join(names))

        # 1. the two uniform builds and per-module cycles
        base = self.build_point((), cfg.name)
        self.base_cycles = base.artifact.manifest()["metrics"]["vela"]["total"]["cycles"]
        try:
            uniform = self.build_point(names, f"{cfg.name}_all_{s.scheme}")
        except BuildError as exc:  # e.g. Vela rejects a16w8 somewhere on U55
            uniform, uniform_error = None, str(exc).splitlines()[0]
            log.warning("search: the build with every candidate at %s failed (%s); per-module costs are unknown, "
                        "candidates are ranked by SQNR gain alone and points judged by their own builds", s.scheme, uniform_error)
        calls = layer_macs(model, cfg.model.input_shape)
        low, _ = layer_cycles(base.artifact.path / "vela" / "per_layer.csv", calls)
        high, _ = layer_cycles(uniform.artifact.path / "vela" / "per_layer.csv", calls) if uniform else (low, 0.0)
        measured = {c: sum(high.get(n, 0.0) - low.get(n, 0.0) for n in leaves) for c, leaves in self.groups.items()}
        self.cost_source = {c: uniform is not None and all(n in low and n in high for n in leaves) for c, leaves in self.groups.items()}
        # Layers matched to no module (rescales, adds, pooling) change too; share their change
        # out in proportion, so that the estimate of "all candidates" is the real build's.
        all_cycles = uniform.artifact.manifest()["metrics"]["vela"]["total"]["cycles"] if uniform else self.base_cycles
        total = sum(measured.values())
        scale = (all_cycles - self.base_cycles) / total if total > 0 else 1.0
        self.delta = {c: d * scale for c, d in measured.items()}

        # 2. sensitivity
        reference = self.measure(())
        self._record_build(reference, base)
        top = self.measure(names)
        if uniform is not None:
            self._record_build(top, uniform)
        else:
            top.status, top.error = "failed", uniform_error
        sens = []
        for c in names:
            p = self.measure((c,))
            gain = None if p.sqnr_db is None or reference.sqnr_db is None else p.sqnr_db - reference.sqnr_db
            sens.append({"module": c, "layers": len(self.groups[c]), "sqnr_db": p.sqnr_db, "sqnr_gain_db": gain, "top1": p.top1,
                         "delta_cycles": self.delta[c], "cost_measured": self.cost_source[c], "status": p.status, "error": p.error})
        float_top1 = self.float_top1

        # 3. greedy: best gain per cycle first; each prefix measured
        ranked = sorted((r for r in sens if r["status"] == "ok"), key=lambda r: -(r["sqnr_gain_db"] or 0.0) / max(r["delta_cycles"], 1.0))
        # the quick answer: the first configuration, from uniform base upwards, meeting the goal
        greedy, chosen = [], ()
        quick = reference if self._meets_goal(reference, float_top1) else None
        for r in ranked:
            chosen = chosen + (r["module"],)
            p = self.measure(chosen)
            greedy.append(p)
            if quick is None and p.status == "ok" and self._meets_goal(p, float_top1):
                quick = p

        # 4. optional Optuna multi-objective search over subsets
        if s.trials:
            self._optuna(names)

        # 5. the front, built for real. The estimate misses the int8/int16 conversions around
        # a chosen module, so after each round the front is recomputed with Vela's cycles for
        # the points built, and its unbuilt points are built, until it is all built or
        # search.front points have been.
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
        return self.report(sens, greedy, quick, built, reference, top, float_top1)

    def _build_front_point(self, p: Point, built: list[Point]) -> None:
        name = f"{self.cfg.name}_mixed{len(built) + 1}"
        built.append(p)
        try:
            result = self.build_point(p.modules, name)
            self._record_build(p, result)
            p.built["recipe"] = self.write_recipe(name, p)
        except (ConfigError, BuildError) as exc:  # e.g. Vela rejects a16w8 there: recorded, skipped
            p.status, p.error = "failed", str(exc).splitlines()[0]
            log.warning("search: building %s failed: %s", " ".join(p.modules), p.error)

    def _record_build(self, p: Point, result) -> None:
        m = result.artifact.manifest()
        v = m["metrics"]["vela"]["total"]
        p.built.update({"artifact": result.artifact.id, "cycles": v["cycles"], "sram_kib": v["sram_kib"],
                        "pte_sha256": m["files"]["model.pte"]["sha256"], "npu_partitions": m["delegation"]["npu_partitions"]})

    def _meets_goal(self, p: Point, float_top1: Optional[float]) -> bool:
        s = self.search
        if s.max_accuracy_drop is None and s.min_sqnr_db is None:
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
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=self.search.seed))
        for p in list(self.points.values()):  # start from what is already measured
            if p.status == "ok":
                study.add_trial(optuna.trial.create_trial(
                    params={n: n in p.modules for n in names},
                    distributions={n: optuna.distributions.CategoricalDistribution([False, True]) for n in names},
                    values=[p.sqnr_db, p.est_cycles]))

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
        from omegaconf import OmegaConf

        from .validate import validate

        cfg = validate(self.container_for(p.modules), default_name=name)
        body = dataclasses.asdict(cfg)
        body["name"] = name
        for key in ("store", "allow_dirty", "strict"):  # where and how it is built is the user's call
            body.pop(key)
        groups = ("model", "target", "quantization", "calibration", "evaluation", "budget")
        defaults = [f"override /{g}: {self.choices[g]}" for g in groups if isinstance(self.choices.get(g), str)]
        header = [
            "# @package _global_",
            f"# Mixed precision found by: {self.command}",
            f"# {len(p.modules)} module(s) at {self.search.scheme}: SQNR {p.sqnr_db} dB, top-1 {p.top1}, "
            f"Vela cycles {p.built.get('cycles')} (estimated {p.est_cycles:.0f}).",
            f"# Build it:   ethosu-build hydra.searchpath=[file://{self.out}] recipe={name}",
            "#             (or copy this file into your recipes/ and: ethosu-build recipe=" + name + ")",
            "defaults:", *[f"  - {d}" for d in defaults], "",
        ]
        path = self.out / "recipe" / f"{name}.yaml"  # a config group folder: usable on the search path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(header) + OmegaConf.to_yaml(OmegaConf.create(body)))
        return str(path)

    def report(self, sens, greedy, quick, built, reference, top, float_top1) -> dict[str, Any]:
        from .sweep import write_json_atomic

        self.out.mkdir(parents=True, exist_ok=True)
        result = {
            "command": self.command, "scheme": self.search.scheme, "candidates": {c: v for c, v in self.groups.items()},
            "float_top1": float_top1, "uniform_base": reference.row(), "uniform_all": top.row(),
            "sensitivity": sens, "greedy": [p.row() for p in greedy],
            "quick_answer": quick.row() if quick is not None else None,
            "front": [p.row() for p in built], "points_measured": len(self.points), "lowerings": self.builds,
        }
        write_json_atomic(self.out / "search.json", result)
        _write_csv(self.out / "sensitivity.csv", sens)
        _write_csv(self.out / "points.csv", [p.row() for p in self.points.values()])
        _plot(self.out / "front.png", list(self.points.values()), built, reference, top)
        _plot_sensitivity(self.out / "sensitivity.png", sens, self.search.scheme)
        (self.out / "search.md").write_text(_markdown(result))
        return result


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))  # rows that were built have more
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _markdown(r: dict[str, Any]) -> str:
    out = [f"# Mixed-precision search ({r['scheme']})", "", f"`{r['command']}`", "",
           f"{len(r['candidates'])} candidates, {r['points_measured']} configurations measured (calibration + PyTorch), "
           f"{r['lowerings']} full builds (lowering + Vela).", "", "## Sensitivity (one module at a time)", "",
           "| module | layers | SQNR dB | gain dB | top-1 | Δ cycles | status |", "|---|---|---|---|---|---|---|"]
    for s in sorted(r["sensitivity"], key=lambda s: -(s["sqnr_gain_db"] or -1e9)):
        out.append(f"| {s['module']} | {s['layers']} | {_fmt(s['sqnr_db'])} | {_fmt(s['sqnr_gain_db'])} | {_fmt(s['top1'])} | "
                   f"{_fmt(s['delta_cycles'])}{'' if s['cost_measured'] else ' (partly unmatched)'} | {s['status']} |")
    out += ["", "## Built points", "", "| configuration | modules | SQNR dB | top-1 | cycles (Vela) | estimated | SRAM KiB | recipe |",
            "|---|---|---|---|---|---|---|---|"]
    built = [(f"mixed {i}" + (" (front)" if p.get("on_front") else ""), p) for i, p in enumerate(r["front"], 1)]
    for label, row in [("uniform base", r["uniform_base"]), ("uniform " + r["scheme"], r["uniform_all"])] + built:
        out.append(f"| {label} | {row['modules']} | {_fmt(row['sqnr_db'])} | {_fmt(row['top1'])} | {_fmt(row.get('cycles'))} | "
                   f"{_fmt(row['est_cycles'])} | {_fmt(row.get('sram_kib'))} | {row.get('recipe') or row.get('error') or '-'} |")
    q = r["quick_answer"]
    if q is None:
        answer = "no goal given, or none met"
    else:
        cost = f"{_fmt(q['cycles'])} Vela cycles" if q.get("cycles") is not None else f"an estimated {_fmt(q['est_cycles'])} cycles"
        answer = (f"{q['modules'] if q['n'] else 'no module (the uniform base)'}: SQNR {_fmt(q['sqnr_db'])} dB, top-1 {_fmt(q['top1'])} "
                  f"(float {_fmt(r['float_top1'])}), {cost} against {_fmt(r['uniform_all'].get('cycles'))} for uniform {r['scheme']}.")
    out += ["", "## Quick answer", "", answer]
    return "\n".join(out) + "\n"


def _plot(path: Path, points: list[Point], built: list[Point], reference: Point, top: Point) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ok = [p for p in points if p.status == "ok" and p.est_cycles is not None and p.sqnr_db is not None]
    ax.scatter([p.est_cycles for p in ok], [p.sqnr_db for p in ok], s=14, c="0.7", label="measured (estimated cycles)")
    for p, style, label in [(reference, "s", "uniform base"), (top, "^", "uniform all")]:
        if p.built.get("cycles") is not None and p.sqnr_db is not None:
            ax.scatter([p.built["cycles"]], [p.sqnr_db], marker=style, s=60, label=label)
    real = [p for p in built if p.built.get("cycles") is not None]
    front = sorted((p for p in real if p.built.get("on_front")), key=lambda p: p.built["cycles"])
    if front:
        ax.plot([p.built["cycles"] for p in front], [p.sqnr_db for p in front], "o-", c="C3", label="front, built (Vela cycles)")
    others = [p for p in real if not p.built.get("on_front")]
    if others:
        ax.scatter([p.built["cycles"] for p in others], [p.sqnr_db for p in others], s=40, facecolors="none", edgecolors="C3",
                   label="built, dominated once built")
    ax.set_xlabel("NPU cycles")
    ax.set_ylabel("SQNR vs float (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_sensitivity(path: Path, sens: list[dict[str, Any]], scheme: str) -> None:
    """Per module: SQNR gain of that module alone at `scheme`, and its Vela cycle cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted((r for r in sens if r["sqnr_gain_db"] is not None), key=lambda r: -r["sqnr_gain_db"])
    if not rows:
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 0.35 * len(rows) + 1.5), sharey=True)
    names = [r["module"] for r in rows]
    a.barh(names, [r["sqnr_gain_db"] for r in rows], color="C0")
    a.set_xlabel(f"SQNR gain with {scheme} (dB)")
    b.barh(names, [r["delta_cycles"] for r in rows], color="C1")
    b.set_xlabel("extra Vela cycles")
    a.invert_yaxis()
    for ax in (a, b):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def search_config(raw: Any) -> SearchConfig:
    from .validate import _convert

    issues: list[ConfigIssue] = []
    s = _convert(SearchConfig, raw, "search", issues)
    if not issues:
        if s.scheme not in SEARCH_SCHEMES:
            issues.append(ConfigIssue("search.scheme", f"{s.scheme!r} is not supported; {accepted(SEARCH_SCHEMES, s.scheme)}"))
        for key, value, low in (("depth", s.depth, 1), ("front", s.front, 1), ("trials", s.trials, 0)):
            if value is not None and value < low:
                issues.append(ConfigIssue(f"search.{key}", f"{value} is too small; accepted: an integer >= {low}"))
    if issues:
        raise ConfigError(issues)
    return s
