"""Scheme + overrides -> EthosUQuantizer; calibration; what the quantizer actually applied.

Imports torch/executorch inside functions: only the quantize stage calls this module.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections import Counter, defaultdict
from typing import Any, Optional

from .schema import OverrideEntry, QuantizationConfig

log = logging.getLogger(__name__)


def scheme_config(scheme: str, per_channel: bool, is_qat: bool = False):
    """The ExecuTorch QuantizationConfig for a scheme name; None means float (unquantized).
    `is_qat` gives the fake-quantize (trainable) form of the same scheme."""
    from executorch.backends.arm.quantizer import (
        get_symmetric_a16w8_quantization_config,
        get_symmetric_quantization_config,
        get_uint8_io_quantization_config,
    )
    from executorch.backends.arm.quantizer.arm_quantizer import get_symmetric_a8w4_quantization_config

    if scheme == "int8":
        return get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=is_qat)
    if scheme == "a16w8":
        return get_symmetric_a16w8_quantization_config(is_per_channel=per_channel, is_qat=is_qat)
    if scheme == "a8w4":
        return get_symmetric_a8w4_quantization_config(is_per_channel=per_channel, is_qat=is_qat)
    if scheme == "uint8":
        return get_uint8_io_quantization_config(is_qat=is_qat)
    if scheme == "float":
        return None
    raise ValueError(f"unknown scheme {scheme!r}")


def import_class(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def make_quantizer(q: QuantizationConfig, overrides: dict[str, OverrideEntry], compile_spec):
    """set_global, then set_io for quantization.io, then each override in order.

    The composable quantizer gives the most recently added setting precedence, so a later
    override wins where two select the same nodes, as the README documents.
    """
    from executorch.backends.arm.quantizer import EthosUQuantizer

    qat = q.qat is not None
    quantizer = EthosUQuantizer(compile_spec)
    quantizer.set_global(scheme_config(q.scheme, q.per_channel, qat))
    if q.io is not None:
        quantizer.set_io(scheme_config(q.io, q.per_channel, qat))
    for entry in overrides.values():
        config = scheme_config(entry.scheme, q.per_channel, qat)
        kind, value = entry.selector()
        if kind == "module_name":
            quantizer.set_module_name(value, config)
        elif kind == "module_type":
            quantizer.set_module_type(import_class(value), config)
        else:
            quantizer.set_io(config)
    return quantizer


def node_finder(entry: OverrideEntry):
    """The quantizer's own node finder for an override, so that "matches no node" is judged
    exactly as the quantizer will judge it."""
    from executorch.backends.cortex_m.quantizer.node_finders import (
        InputNodeFinder,
        ModuleNameNodeFinder,
        ModuleTypeNodeFinder,
    )

    kind, value = entry.selector()
    if kind == "module_name":
        return ModuleNameNodeFinder(value)
    if kind == "module_type":
        return ModuleTypeNodeFinder(import_class(value))
    return InputNodeFinder()


def calibrate(prepared, x, batch_size: int, batched: bool, label: str = "calibrating") -> int:
    """Run the samples through the observers, `batch_size` at a time when the export has a
    dynamic batch dimension (observer cost is per call), else one by one. Returns calls made."""
    import torch

    step = batch_size if batched else 1
    chunks = list(torch.split(x, step))
    with torch.no_grad(), _bar(label, "samples", total=len(x)) as (bar, task):
        for chunk in chunks:
            prepared(chunk)
            bar.advance(task, len(chunk))
    return len(chunks)


_DTYPE_SCHEME = {"torch.int8": "int8", "torch.int16": "a16w8", "torch.uint8": "uint8"}
_ANNOTATION = "quantization_annotation"


def module_path(node) -> Optional[str]:
    """The innermost module a graph node came from, as named by named_modules()."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self__.", "") or None


def _spec_dtype(spec, depth: int = 0):
    """The dtype a quantization spec resolves to; shared specs point at another edge/node."""
    if spec is None or depth > 32:
        return None
    if hasattr(spec, "dtype"):
        return spec.dtype
    ref = getattr(spec, "edge_or_node", None)
    if isinstance(ref, tuple):  # an edge (producer, consumer): the consumer's input spec
        ann = ref[1].meta.get(_ANNOTATION)
        return _spec_dtype(ann.input_qspec_map.get(ref[0]) if ann else None, depth + 1)
    if ref is not None:  # a node: its output spec
        ann = ref.meta.get(_ANNOTATION)
        return _spec_dtype(ann.output_qspec if ann else None, depth + 1)
    return None


def node_scheme(node) -> str:
    """int8 / a16w8 / a8w4 / uint8 / float for one op, from the quantizer's annotation: a8w4
    when a weight has the 4-bit range, else the dtype of its (first) activation input, else
    of its output; no annotation means float."""
    ann = node.meta.get(_ANNOTATION)
    if ann is None:
        return "float"
    if any(getattr(spec, "quant_max", None) == 7 for spec in ann.input_qspec_map.values()):
        return "a8w4"  # a 4-bit weight (int8 storage, range -7..7)
    for spec in list(ann.input_qspec_map.values())[:1] + [ann.output_qspec]:
        dtype = _spec_dtype(spec)
        if dtype is not None:
            return _DTYPE_SCHEME.get(str(dtype), str(dtype))
    return "float"


def applied_schemes(converted) -> dict[str, Any]:
    """What the quantizer did, read back from the annotated graph and its control-flow
    submodules (call before re-export, which drops the annotations): the scheme of every op
    grouped by module, op counts per scheme."""
    import torch

    by_module: dict[str, Counter] = defaultdict(Counter)
    counts: Counter = Counter()
    graphs = [m.graph for m in converted.modules() if isinstance(m, torch.fx.GraphModule)]  # with cond/while branches
    for node in (n for g in graphs for n in g.nodes):
        if node.op != "call_function" or "quantize_per" in str(node.target) or "getitem" in str(node.target):
            continue
        scheme = node_scheme(node)
        counts[scheme] += 1
        by_module[module_path(node) or "<top>"][scheme] += 1
    modules = {m: (next(iter(c)) if len(c) == 1 else dict(c)) for m, c in sorted(by_module.items())}
    return {"ops_by_scheme": dict(counts), "modules": modules}


def override_matches(graph_module, overrides: dict[str, OverrideEntry]) -> dict[str, int]:
    """Nodes each override selects in the exported graph (0 means it would be a silent no-op)."""
    return {name: sum(1 for _ in node_finder(e).find_nodes(graph_module)) for name, e in overrides.items()}


# --- control flow ---------------------------------------------------------------------------

# The graph argument positions of each higher-order op's submodules, and the role of each.
_CONTROL_FLOW_ARGS = {"cond": ((1, "true branch"), (2, "false branch")), "while_loop": ((0, "cond_fn"), (1, "body_fn"))}


def control_flow(graph_module, params: Optional[dict[str, str]] = None, prefix: str = "") -> list[dict[str, Any]]:
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
        entry = {"op": op, "node": f"{prefix}.{node.name}" if prefix else node.name, "branches": [], "captured_parameters": []}
        if op == "cond" and params:
            entry["captured_parameters"] = [params[a.name] for a in node.args[3] if getattr(a, "name", None) in params]
        found.append(entry)
        for index, role in _CONTROL_FLOW_ARGS[op]:
            name = node.args[index].target
            qualified = f"{prefix}.{name}" if prefix else name
            entry["branches"].append({"role": role, "submodule": qualified})
            found.extend(control_flow(getattr(graph_module, name), None, qualified))
    return found


def branch_coverage(module, flows: list[dict[str, Any]], x) -> dict[str, int]:
    """How many of the samples `x` reach each control-flow submodule, by running them one
    at a time through `module` (the exported program's module) with a forward pre-hook on
    every branch. A branch no sample reaches keeps uncalibrated observers."""
    import torch

    counts: dict[str, int] = {b["submodule"]: 0 for f in flows for b in f["branches"]}
    reached: set[str] = set()
    handles = [
        module.get_submodule(name).register_forward_pre_hook(lambda *_, name=name: reached.add(name))
        for name in counts
    ]
    try:
        with torch.no_grad():
            for sample in torch.split(x, 1):
                reached.clear()
                module(sample)
                for name in reached:
                    counts[name] += 1
    finally:
        for h in handles:
            h.remove()
    return counts


def quantize_with_submodules(quantizer, graph_module, x, is_qat: bool = False):
    """prepare -> calibrate on every sample, one at a time -> convert, for a graph whose
    cond / while_loop submodules must be prepared and converted too. ExecuTorch 1.5.1 has
    this only as the private EthosUQuantizer._quantize_with_submodules: this is the one
    place that names it."""
    import torch

    samples = _Progress([(s,) for s in torch.split(x, 1)], "calibrating")
    with torch.no_grad():
        return quantizer._quantize_with_submodules(graph_module, samples, is_qat=is_qat)


class _Progress:
    """An iterable that shows a progress bar while someone else's loop consumes it."""

    def __init__(self, items: list, label: str):
        self.items, self.label = items, label

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        with _bar(self.label, "samples", total=len(self.items)) as (bar, task):
            for item in self.items:
                yield item
                bar.advance(task)


@contextlib.contextmanager
def _bar(label: str, unit: str, total: Optional[int] = None):
    """A transient rich progress bar on stderr (stdout is for results): (bar, task)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), transient=True, console=Console(stderr=True),
    ) as bar:
        yield bar, bar.add_task(label, total=total)


# --- quantization-aware training ------------------------------------------------------------


def fold_batchnorm(graph_module) -> None:
    """Fold each BatchNorm into the convolution before it, in place, as prepare_pt2e does for
    post-training quantization. prepare_qat_pt2e would instead simulate the BatchNorm during
    training and fold it at convert time into a bias that the quantizer never annotated; the
    Ethos-U partitioner then leaves those convolutions on the CPU (seen with ExecuTorch
    1.5.1). QAT thus fine-tunes the folded weights and bias."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(graph_module)


def qat_loss(loss: str, labelled: bool) -> str:
    """The loss `auto` resolves to: the labels when there are some, else the float model."""
    if loss == "auto":
        return "cross_entropy" if labelled else "distill"
    return loss


def train(prepared, float_model, samples, qat, batched: bool) -> dict[str, Any]:
    """A short, seeded training loop over the fake-quantized model (prepare_qat_pt2e's
    output): `qat.epochs` passes over the samples in `qat.batch_size` batches (one at a time
    when the export has no dynamic batch), shuffled by `qat.seed`. Single-threaded, so the
    trained weights, and the program's bytes, do not depend on the machine's core count.
    Returns what the manifest records."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    loss_name = qat_loss(qat.loss, samples.y is not None)
    targets = samples.y
    if loss_name == "distill":
        with torch.no_grad():
            targets = torch.cat([float_model(c) for c in torch.split(samples.x, qat.batch_size if batched else 1)])
    step = qat.batch_size if batched else 1
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=qat.lr) if qat.optimizer == "adam" else torch.optim.SGD(params, lr=qat.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(qat.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        move_exported_model_to_train(prepared)
        batches = []  # sample indices per step: a fresh shuffle each epoch
        for _ in range(qat.epochs):
            batches.extend(torch.randperm(len(samples), generator=gen).split(step))
        with _bar("training (QAT)", "batches", total=len(batches)) as (bar, task):
            for idx in batches:
                opt.zero_grad()
                out = prepared(samples.x[idx])
                if loss_name == "cross_entropy":
                    loss = torch.nn.functional.cross_entropy(out, targets[idx])
                else:
                    loss = torch.nn.functional.mse_loss(out, targets[idx])
                loss.backward()
                opt.step()
                losses.append(loss.item())
                bar.advance(task)
    finally:
        move_exported_model_to_eval(prepared)
        torch.set_num_threads(threads)
    per_epoch = len(batches) // qat.epochs
    return {
        "samples": len(samples), "epochs": qat.epochs, "batch_size": step, "steps": len(batches),
        "optimizer": qat.optimizer, "lr": qat.lr, "loss": loss_name,
        "loss_first_epoch": round(sum(losses[:per_epoch]) / per_epoch, 6),
        "loss_last_epoch": round(sum(losses[-per_epoch:]) / per_epoch, 6),
    }
