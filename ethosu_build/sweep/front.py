"""An optimizing sweep's answer (hydra/sweeper=optimize, optimize.py): the Pareto front
of its feasible rows on the objective, a recipe per front row, and what the summary and the
command's last line say of them, also when no trial was feasible (then nothing was written,
and the trial closest to the budgets is named)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import OK_STATUSES as OK
from ..files import pareto_front
from .plot import labels

log = logging.getLogger("ethosu_build")


def objective_front(rows: list[dict[str, Any]], pairs: list[list[str]]) -> list[dict[str, Any]]:
    """The feasible rows (built, reused, up to date) no other beats on every objective."""
    done = [r for r in rows if r["status"] in OK and isinstance(r.get("objective"), list)]
    return pareto_front(
        done,
        [(lambda r, i=i: r["objective"][i] if i < len(r["objective"]) else None, d) for i, (_, d) in enumerate(pairs)],
    )


def front_recipes(sweep_dir: Path, rows: list[dict[str, Any]], plan: dict[str, Any]) -> list[Path]:
    """A recipe per front row, from its job's composed config (recipes.py)."""
    from ..config.validate import validate
    from . import recipes

    written = []
    names = ", ".join(f"{n} {d}" for n, d in plan["objective"])
    for k, row in enumerate(rows, 1):
        job = sweep_dir / row["job"] / ".hydra"
        try:
            config = OmegaConf.to_container(OmegaConf.load(job / "config.yaml"), resolve=True)
            choices = OmegaConf.to_container(OmegaConf.load(job / "hydra.yaml").hydra.runtime.choices)
            cfg = validate(config)
        except Exception as exc:  # a job dir that no longer holds its config: the summary still stands
            log.warning("no recipe for front job %s: %s", row["job"], exc)
            continue
        name = f"{cfg.name}_front{k}"
        values = ", ".join(f"{n} {v:g}" for (n, _), v in zip(plan["objective"], row["objective"]))
        comments = [
            f"On the Pareto front ({names}) of the optimizing sweep {sweep_dir}, job {row['job']}:",
            f"{values}; artifact {row.get('artifact')}; overrides: {' '.join(row.get('overrides') or [])}",
        ]
        written.append(recipes.write(sweep_dir.resolve(), name, cfg, choices, comments))  # a command run anywhere
        row["recipe"] = name
    return written


def markdown_lines(summary) -> list[str]:
    """summary.md's paragraph on the study: its space, its trials, its front or why none."""
    plan = summary.optimize or {}
    trials = plan.get("trials") or []
    states = {s: sum(1 for t in trials if t["state"] == s and t.get("repeat_of") is None)
              for s in ("feasible", "infeasible", "rejected")}  # fmt: skip
    repeats = sum(1 for t in trials if t.get("repeat_of") is not None)
    if summary.front:
        answer = (
            "Pareto front of the feasible trials marked with *; a recipe rebuilds each: "
            + (", ".join(f"`{r['recipe']}`" for r in summary.front if r.get("recipe")) or "none could be written")
            + f" (`ethosu-build hydra.searchpath=[file://{summary.sweep_dir}] recipe=NAME`)."
        )
    else:
        answer = no_front(summary) + "."
    return [
        f"Optimizing sweep ({plan.get('sampler')}, seed {plan.get('seed')}): "
        + ", ".join(f"{n} ({d})" for n, d in plan.get("objective") or [])
        + " over "
        + " x ".join(f"{k} {v}" for k, v in (plan.get("space") or {}).items())
        + ".",
        "",
        f"{len(trials)} trials: {summary.planned or 0} builds, {states['feasible']} feasible, {states['infeasible']} "
        f"over a budget, {states['rejected']} rejected; {repeats} repeated a point already built (no build).",
        "",
        answer,
        "",
    ]


def last_line(summary) -> str:
    """What the command says of the answer: where the front's recipes are, or that there is none."""
    if not summary.front:
        return no_front(summary)
    where = (
        f"recipes in {summary.sweep_dir / 'recipe'}"
        if summary.recipes
        else "no recipe could be written (the log says why)"
    )
    return f"Pareto front: {len(summary.front)} feasible point(s), {where}"


def no_front(summary) -> str:
    """No feasible trial: so no front and no recipe; and the trial closest to the budgets."""
    over = [r for r in summary.rows if r["status"] == "budget"]
    others = sum(1 for r in summary.rows if r["status"] not in OK + ("budget",))
    counts = ", ".join(
        part for n, part in ((len(over), f"{len(over)} over a budget"), (others, f"{others} rejected or failed")) if n
    )
    head = "no trial met the budgets" if over else "no trial was feasible"
    text = f"{head} ({counts or 'none finished'}): no Pareto front, and no recipe was written"
    closest = closest_to_budgets(over)
    if closest is not None:
        row, breaches = closest
        label = labels(summary.rows)[id(row)]
        text += f"; closest: job {row['job']} ({label}), " + ", ".join(
            f"budget.{name} over by {margin:.0%}" for name, margin in breaches
        )
    return text


def closest_to_budgets(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, float]]] | None:
    """The over-budget row whose breaches sum to the least ((measured - limit) / limit, as the
    sampler's constraints see them), with its breaches; None when no row says its margins."""
    scored = []
    for r in rows:
        breaches = [(n, float(v)) for n, v in (r.get("violations") or {}).items() if v is not None and v > 0]
        if breaches:
            scored.append((sum(v for _, v in breaches), r, breaches))
    if not scored:
        return None
    _, row, breaches = min(scored, key=lambda s: s[0])
    return row, breaches
