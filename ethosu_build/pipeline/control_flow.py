"""Models with torch.cond / while_loop: find them, check the target and the calibration
set can take them, and quantize through the quantizer's submodule-aware path.

Calibration runs sample by sample (a branch predicate holds per sample), and every branch
must see samples: a branch with uncalibrated observers quantizes badly and silently, so one
that no sample reaches is a config error naming it.

torch is imported inside functions: the export stage's module imports this one.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import targets
from ..config.schema import TARGETS, BuildConfig
from ..errors import ConfigError, ConfigIssue
from .progress import Progress

log = logging.getLogger("ethosu_build.build")

# The graph argument positions of each higher-order op's submodules, and the role of each.
_CONTROL_FLOW_ARGS = {"cond": ((1, "true branch"), (2, "false branch")), "while_loop": ((0, "cond_fn"), (1, "body_fn"))}


def control_flow(graph_module, params: dict[str, str] | None = None, prefix: str = "") -> list[dict[str, Any]]:
    """Every torch.cond / while_loop in the graph, nested ones included:
    [{"op", "node", "branches": [{"role", "submodule"}], "captured_parameters"}], submodules by
    qualified name. `params` maps the graph's placeholders to parameter names (the exported
    program's signature); a cond operand among them is a weight a branch captured."""
    import torch

    ops = {torch.ops.higher_order.cond: "cond", torch.ops.higher_order.while_loop: "while_loop"}
    found = []
    for node in graph_module.graph.nodes:
        op = ops.get(node.target) if node.op == "call_function" else None
        if op is None:
            continue
        entry = {
            "op": op,
            "node": f"{prefix}.{node.name}" if prefix else node.name,
            "branches": [],
            "captured_parameters": [],
        }
        if op == "cond" and params:
            entry["captured_parameters"] = [params[a.name] for a in node.args[3] if getattr(a, "name", None) in params]
        found.append(entry)
        for index, role in _CONTROL_FLOW_ARGS[op]:
            name = node.args[index].target
            qualified = f"{prefix}.{name}" if prefix else name
            entry["branches"].append({"role": role, "submodule": qualified})
            found.extend(control_flow(getattr(graph_module, name), None, qualified))
    return found


def branch_coverage(module, flows: list[dict[str, Any]], samples) -> dict[str, int]:
    """How many of the samples (data.Samples) reach each control-flow submodule, by running them one
    at a time through `module` (the exported program's module) with a forward pre-hook on
    every branch. A branch no sample reaches keeps uncalibrated observers."""
    import torch

    counts: dict[str, int] = {b["submodule"]: 0 for f in flows for b in f["branches"]}
    reached: set[str] = set()
    handles = [
        module.get_submodule(name).register_forward_pre_hook(lambda *_, name=name: reached.add(name)) for name in counts
    ]
    try:
        with torch.no_grad():
            for sample in samples.chunks(1):
                reached.clear()
                module(*sample)
                for name in reached:
                    counts[name] += 1
    finally:
        for h in handles:
            h.remove()
    return counts


def quantize_with_submodules(quantizer, graph_module, samples, is_qat: bool = False):
    """prepare -> calibrate on every sample, one at a time -> convert, for a graph whose
    cond / while_loop submodules must be prepared and converted too. ExecuTorch 1.5.1 has
    this only as the private EthosUQuantizer._quantize_with_submodules: this is the one
    place that names it."""
    import torch

    calls = Progress(samples.chunks(1), "calibrating")
    with torch.no_grad():
        return quantizer._quantize_with_submodules(graph_module, calls, is_qat=is_qat)


def check(cfg: BuildConfig, flows: list[dict[str, Any]]) -> None:
    """The target must run control flow on its NPU, and QAT cannot train through it."""
    first = flows[0]
    where = f"torch.{first['op']} (graph node {first['node']})"
    if not targets.supports_control_flow(cfg.target.accelerator):
        raise ConfigError(
            ConfigIssue(
                "target.accelerator",
                (
                    f"{cfg.target.accelerator!r} cannot run the model's {where}: only Ethos-U85's TOSA profile has the "
                    "control-flow extension, and ExecuTorch 1.5.1 cannot leave control flow on the CPU for U55/U65; "
                    f"accepted: {', '.join(t for t in TARGETS if targets.supports_control_flow(t))}, or a model "
                    "without cond/while_loop"
                ),
            )
        )
    if cfg.quantization.qat is not None:
        raise ConfigError(
            ConfigIssue(
                "quantization.qat",
                (
                    f"quantization-aware training of a model with control flow ({where}) is not supported; "
                    "accepted: null (post-training quantization with one calibration sample per branch)"
                ),
            )
        )


def quantize(quantizer, program, samples, flows: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """Branch coverage first, then prepare -> calibrate every sample -> convert through the
    submodules. Returns (the converted module, info for the manifest)."""
    module = program.module(check_guards=False)
    coverage = branch_coverage(module, flows, samples)
    missed = [(f, b) for f in flows for b in f["branches"] if coverage[b["submodule"]] == 0]
    if missed:
        raise ConfigError(
            [
                ConfigIssue(
                    "calibration",
                    (
                        f"the {b['role']} of torch.{f['op']} (graph node {f['node']}, submodule {b['submodule']}) is "
                        "reached by none of "
                        f"the {len(samples)} calibration samples, so its quantization ranges would be uncalibrated; "
                        "accepted: a "
                        "calibration set with at least one sample per branch (more samples, or another dataset)"
                    ),
                )
                for f, b in missed
            ]
        )
    captured = sorted({p for f in flows for p in f.get("captured_parameters", [])})
    if captured:
        # ExecuTorch 1.5.1's annotator gives every cond operand the first operand's
        # (activation) quantization, so weights a branch captures lose precision.
        log.warning(
            "quantize: %d weight tensors are captured by a cond branch (%s); ExecuTorch 1.5.1 quantizes them at "
            "the activation scale (docs/quantization.md, 'Control flow')",
            len(captured),
            ", ".join(captured[:4]),
        )
    converted = quantize_with_submodules(quantizer, module, samples)
    info = {
        "calibration": {
            "samples": len(samples),
            "batch_size": 1,
            "calls": len(samples),
            "batched": False,
            "unbatched_reason": "control flow: branch predicates hold per sample",
        },
        "control_flow": {"ops": flows, "samples_per_branch": coverage, "captured_parameters": captured},
    }
    return converted, info
