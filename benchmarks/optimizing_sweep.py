"""Optimizing sweep vs the exhaustive grid: how much of the grid's Pareto front N builds find.

    python benchmarks/optimizing_sweep.py [--trials 11 22] [--seeds 0 1 2] [--samplers tpe nsga2 random]

The space: the digits CNN on all 11 Ethos-U configurations x 2 schemes (int8, a16w8) x 2
lowerings (default, fast): 44 configurations; objective {inference_ms: min, sram_kib: min,
sqnr_db: max}; a latency budget. First the grid, one `ethosu-build -m` of all 44 (joblib, 2
workers, a fresh store); then each optimizing sweep (`hydra/sweeper=optimize`) with N builds,
per sampler and seed, against the same store, so its builds are found stored and only its
choices are measured. Reported per run: the fraction of the grid's feasible Pareto front it
found (same configurations) and the hypervolume of its front over the grid's (normalized
objectives; the reference point: the worst feasible value of each, a step beyond).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = [
    "ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512",
    "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024", "ethos-u85-2048",
]  # fmt: skip
OBJECTIVE = [("inference_ms", "min"), ("sram_kib", "min"), ("sqnr_db", "max")]
BUDGET = "budget.max_inference_ms=0.03"  # the slowest Ethos-U55 configurations miss it
COMMON = [
    "objective={" + ", ".join(f"{n}: {d}" for n, d in OBJECTIVE) + "}",
    BUDGET,
    "evaluation.tosa_samples=4",
]
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run([str(BIN / "ethosu-build"), *args], cwd=cwd, capture_output=True, text=True)
    if res.returncode not in (0, 3):  # 3: a grid with budget breaches
        sys.exit(f"ethosu-build {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def point(overrides: list[str] | str) -> tuple[str, str, str]:
    items = overrides.split() if isinstance(overrides, str) else overrides
    kv = dict(o.split("=", 1) for o in items if "=" in o)
    return kv["target"], kv["quantization"], kv["lowering"]


def rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "summary.csv") as f:
        out = list(csv.DictReader(f))
    for r in out:
        r["values"] = [float(v) for v in r["objective"].split()] if r["objective"] else None
    return out


def front(points: dict[tuple, list[float]]) -> set[tuple]:
    signs = [1.0 if d == "min" else -1.0 for _, d in OBJECTIVE]
    scored = {k: [s * v for s, v in zip(signs, vals)] for k, vals in points.items()}

    def dominated(a):
        return any(all(x <= y for x, y in zip(b, a)) and any(x < y for x, y in zip(b, a)) for b in scored.values())

    return {k for k, v in scored.items() if not dominated(v)}


def hypervolume(points: list[list[float]], lo: list[float], hi: list[float]) -> float:
    """Of minimized, normalized points against the reference (1.1, ...), by Monte Carlo with a
    fixed seed (3 objectives: exact is not worth the code here)."""
    import numpy as np

    signs = np.array([1.0 if d == "min" else -1.0 for _, d in OBJECTIVE])
    p = (np.array(points) * signs - lo) / np.maximum(hi - lo, 1e-12)
    samples = np.random.RandomState(0).uniform(0, 1.1, size=(200_000, len(OBJECTIVE)))
    covered = np.zeros(len(samples), bool)
    for q in p:
        covered |= np.all(samples >= q, axis=1)
    return float(covered.mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, nargs="+", default=[11, 22])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "random"])
    args = ap.parse_args()
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="ethosu-optimize-"))
    space = [f"target={','.join(TARGETS)}", "quantization=int8,a16w8", "lowering=default,fast"]
    seconds = run(
        ["-m", *space, *COMMON, "store.root=store", "hydra.sweep.dir=store/sweeps/grid",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], work,
    )  # fmt: skip
    grid = rows(work / "store" / "sweeps" / "grid")
    feasible = {point(r["overrides"]): r["values"] for r in grid if r["status"] in ("built", "reused", "up_to_date")}
    best = front(feasible)
    signs = np.array([1.0 if d == "min" else -1.0 for _, d in OBJECTIVE])
    all_values = np.array(list(feasible.values())) * signs
    lo, hi = all_values.min(axis=0), all_values.max(axis=0)
    grid_hv = hypervolume([feasible[k] for k in best], lo, hi)
    print(f"grid: {len(grid)} configurations, {len(feasible)} feasible, front {len(best)}, {seconds:.0f} s")
    results = []
    opt_space = [f"target=choice({','.join(TARGETS)})", "quantization=int8,a16w8", "lowering=default,fast"]
    for sampler in args.samplers:
        for n in args.trials:
            for seed in args.seeds:
                name = f"{sampler}-{n}-{seed}"
                run(["-m", "hydra/sweeper=optimize", f"hydra.sweeper.sampler={sampler}", f"hydra.sweeper.n_trials={n}",
                     f"hydra.sweeper.seed={seed}", *opt_space, *COMMON, "store.root=store",
                     f"hydra.sweep.dir=store/sweeps/{name}"], work)  # fmt: skip
                plan = json.loads((work / "store" / "sweeps" / name / "sweep.json").read_text())["optimize"]
                found = {
                    (t["params"]["target"], t["params"]["quantization"], t["params"]["lowering"]): t["values"]
                    for t in plan["trials"]
                    if t["state"] == "feasible"
                }
                mine = front(found)
                hv = hypervolume([found[k] for k in mine], lo, hi) if mine else 0.0
                builds = sum(1 for t in plan["trials"] if t["repeat_of"] is None)
                results.append((sampler, n, seed, builds, len(mine & best) / len(best), hv / grid_hv))
                print(
                    f"{name}: {builds} builds, grid front found {len(mine & best)}/{len(best)}, hv {hv / grid_hv:.3f}"
                )
    print()
    print("| sampler | builds | share of the grid's builds | grid front found (mean of seeds) | hypervolume ratio |")
    print("|---|---|---|---|---|")
    for sampler in args.samplers:
        for n in args.trials:
            sel = [r for r in results if r[0] == sampler and r[1] == n]
            builds = np.mean([r[3] for r in sel])
            print(f"| {sampler} | {builds:.0f} | {builds / len(grid):.0%} | {np.mean([r[4] for r in sel]):.0%} "
                  f"| {np.mean([r[5] for r in sel]):.2f} |")  # fmt: skip
    print(f"\n(grid: {len(grid)} builds in {seconds:.0f} s; {work})")


if __name__ == "__main__":
    main()
