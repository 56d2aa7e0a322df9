"""What ethosu-search measures and compares: points (a set of modules at search.scheme),
candidates, per-module MACs and Vela cycles, the Pareto front.

torch is imported inside functions: `ethosu-search` checks its config before loading it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import SearchConfig
from ..errors import ConfigError, ConfigIssue
from ..files import pareto_front, read_csv
from ..pipeline.quantizer import import_class

WEIGHT_LAYERS = (
    "torch.nn.Conv1d",
    "torch.nn.Conv2d",
    "torch.nn.ConvTranspose1d",
    "torch.nn.ConvTranspose2d",
    "torch.nn.Linear",
)


@dataclass
class Point:
    """One set of modules at search.scheme, measured."""

    modules: tuple[str, ...]
    sqnr_db: float | None = None
    top1: float | None = None
    est_cycles: float | None = None
    status: str = "ok"
    error: str | None = None
    built: dict[str, Any] = field(default_factory=dict)  # artifact id, real cycles, SRAM, ...

    def row(self) -> dict[str, Any]:
        return {
            "modules": " ".join(self.modules) or "-",
            "n": len(self.modules),
            "sqnr_db": self.sqnr_db,
            "top1": self.top1,
            "est_cycles": self.est_cycles,
            "status": self.status,
            "error": self.error,
            **self.built,
        }


def check_modules(search: SearchConfig, module_names: list[str]) -> None:
    issues = [
        ConfigIssue(
            f"search.modules.{i}", f"{name!r} not found in the model; modules include {', '.join(module_names[:8])}"
        )
        for i, name in enumerate(search.modules or [])
        if name not in module_names
    ]
    if issues:
        raise ConfigError(issues)


def candidates(model, search: SearchConfig) -> dict[str, list[str]]:
    """Candidate name -> the weight layers (leaf Conv/Linear module names) it covers."""
    kinds = tuple(import_class(k) for k in WEIGHT_LAYERS)
    leaves = [n for n, m in model.named_modules() if n and isinstance(m, kinds)]
    if search.modules:
        return {c: [n for n in leaves if n == c or n.startswith(c + ".")] or [c] for c in search.modules}
    groups: dict[str, list[str]] = {}
    for n in leaves:
        key = ".".join(n.split(".")[: search.depth]) if search.depth else n
        groups.setdefault(key, []).append(n)
    return groups


def layer_macs(model, specs: list) -> list[tuple[str, int]]:
    """(leaf module, MACs) for each Conv/Linear call, in execution order."""
    import torch

    from ..pipeline.model_checks import example_inputs

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
            model(*example_inputs(specs))
    finally:
        for h in handles:
            h.remove()
    return calls


def layer_cycles(per_layer_csv: Path, calls: list[tuple[str, int]]) -> tuple[dict[str, float], float]:
    """Vela cycles per leaf module: each call, in PyTorch's order, takes the first unused
    per-layer row with its MAC count (Vela may schedule a branch, e.g. a residual shortcut,
    before its sibling, but layers of equal size keep their relative order). Returns (cycles
    by module, cycles of rows matched to no module)."""
    rows = read_csv(per_layer_csv)
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


def known_cycles(p: Point) -> float | None:
    """Vela's cycles where the point was built, else the estimate."""
    return p.built.get("cycles", p.est_cycles)


def pareto(points: list[Point], cycles=known_cycles) -> list[Point]:
    """Points no other point beats on both cycles (lower) and SQNR (higher)."""
    ok = [p for p in points if p.status == "ok"]
    return pareto_front(ok, [(cycles, "min"), (lambda p: p.sqnr_db, "max")])


def spread(front: list[Point], n: int) -> list[Point]:
    """n points spread evenly along the front (by position)."""
    if len(front) <= n:
        return front
    idx = sorted({round(i * (len(front) - 1) / (n - 1)) for i in range(n)}) if n > 1 else [len(front) // 2]
    return [front[i] for i in idx]
