"""EthosUQuantizer from the scheme and the overrides (built once per quantize stage);
calibration; what the quantizer actually applied, read back from its annotations.

Imports torch/executorch inside functions: only the quantize stage and the model checks
call this module.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter, defaultdict
from typing import Any

from ..config import targets
from ..config.schema import BuildConfig, OverrideEntry
from .progress import bar

log = logging.getLogger(__name__)


def scheme_config(scheme: str, per_channel: bool, is_qat: bool = False, observer: str = "histogram"):
    """The ExecuTorch QuantizationConfig for a scheme name; None means float (unquantized).
    `is_qat` gives the fake-quantize (trainable) form of the same scheme; `observer` minmax,
    the same scheme with its activations' ranges set by a min/max observer (with_observer)."""
    config = _scheme_config(scheme, per_channel, is_qat)
    return with_observer(config) if observer == "minmax" and config is not None else config


def with_observer(config):
    """`config` with a MinMaxObserver (the observed range, nothing clipped) for its activations
    in place of EthosUQuantizer's HistogramObserver (the range of least squared error), with
    the same arguments (its eps): the dtype, the code range and the weights stay as they are."""
    import dataclasses

    from torchao.quantization.pt2e.observer import MinMaxObserver

    def swapped(spec):
        ctr = getattr(spec, "observer_or_fake_quant_ctr", None)
        if ctr is None or "HistogramObserver" not in str(ctr):
            return spec  # a shared, derived or fixed spec, or QAT's fake quantizer: as it is
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=MinMaxObserver.with_args(**ctr.p.keywords))

    return dataclasses.replace(
        config, input_activation=swapped(config.input_activation), output_activation=swapped(config.output_activation)
    )


def _scheme_config(scheme: str, per_channel: bool, is_qat: bool):
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


def build_quantizer(cfg: BuildConfig):
    """set_global, then set_io for quantization.io, then each override in order, for the
    target's compile spec; the fake-quantize (trainable) configs when quantization.qat is set.

    The composable quantizer gives the most recently added setting precedence, so a later
    override wins where two select the same nodes, as docs/quantization.md documents.
    """
    from executorch.backends.arm.quantizer import EthosUQuantizer

    q = cfg.quantization
    qat = q.qat is not None
    quantizer = EthosUQuantizer(targets.compile_spec(cfg.target))
    quantizer.validate = _validate  # its own check, but over tensors only (see _validate)
    quantizer.set_global(scheme_config(q.scheme, q.per_channel, qat, q.observer))
    if q.io is not None:
        quantizer.set_io(scheme_config(q.io, q.per_channel, qat, q.observer))
    for entry in cfg.overrides.values():
        config = scheme_config(entry.scheme, q.per_channel, qat, entry.observer or q.observer)
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


def _validate(model) -> None:
    """EthosUQuantizer.validate (ExecuTorch 1.5.1: the tensor inputs of each operator live on
    one device), over tensors only. Its own check takes every input's value for a tensor, and
    a symbolic size (the batch-dynamic export's `4*s77` of an attention's batch x heads view)
    has no device: it rejected such models outright ("different device inputs: {'cpu', 'Could
    not get device from 4*s77'}")."""
    import torch

    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        devices = set()
        for arg in node.all_input_nodes:
            val = arg.meta.get("val")
            for v in val if isinstance(val, (tuple, list)) else [val]:
                if isinstance(v, torch.Tensor):
                    devices.add(str(v.device))
        if len(devices) > 1:
            raise ValueError(f"Quantizer detected operator {node.name} with different device inputs: {devices}.")


def prepare(quantizer, module, batched: bool, qat: bool = False):
    """prepare_pt2e (prepare_qat_pt2e when `qat`) of an exported program's module; on a
    batch-dynamic one, each symbolic size a quantizer pass wrote into the graph as a value is
    then computed from the input's size (bind_symbolic_sizes)."""
    import warnings

    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e, prepare_qat_pt2e

    prepare_fn = prepare_qat_pt2e if qat else prepare_pt2e
    if not batched:
        return prepare_fn(module, quantizer)
    with warnings.catch_warnings():  # torch.fx warns of each such size: bound right after
        warnings.filterwarnings("ignore", message="Raw SymInt value", category=UserWarning)
        prepared = prepare_fn(module, quantizer)
    bind_symbolic_sizes(prepared)
    return prepared


def bind_symbolic_sizes(graph_module) -> int:
    """Computes in the graph each symbolic size that a quantizer pass wrote into it as a
    value: ExecuTorch 1.5.1's DecomposeMeanDimPass writes the traced shape, the batch's
    symbol (`s77`) included, into its reshapes, and the generated code then names `s77`,
    which nothing defines (NameError on any call). torch.fx's own materialize_symints turns
    each into nodes that compute it from the size of the input that gives the symbol, so the
    graph runs at any batch. Returns how many it bound; raises (AssertionError) if an input
    gives none of a size's symbols."""
    import torch
    from torch.utils._pytree import tree_leaves, tree_map

    graph = graph_module.graph

    def sizes(node) -> list:
        return [v for v in tree_leaves((node.args, node.kwargs)) if isinstance(v, torch.SymInt)]

    users = [n for n in graph.nodes if n.op == "call_function" and sizes(n)]
    if not users:
        return 0
    values = [v for n in users for v in sizes(n)]
    with graph.inserting_before(next(n for n in graph.nodes if n.op != "placeholder")):
        computed = iter(graph.materialize_symints(values))  # one call: shared sizes computed once
    for node in users:  # tree_map visits the leaves in tree_leaves' order
        node.args, node.kwargs = tree_map(
            lambda v: next(computed) if isinstance(v, torch.SymInt) else v, (node.args, node.kwargs)
        )
    graph_module.recompile()
    return len(values)


def call(module, *args):
    """module(*args) without torch.fx's error wrapper, which prints the whole generated code
    of a failing GraphModule to stderr before it raises (torch/fx/graph_module.py,
    _WrappedCall); the exception, traceback included, is the same."""
    import torch

    return torch.nn.Module.__call__(module, *args)


def calibrate(prepared, samples, batch_size: int, batched: bool, label: str = "calibrating") -> int:
    """Run the samples (data.Samples) through the observers, `batch_size` at a time when the
    export has a dynamic batch dimension (observer cost is per call), else one by one.
    Returns calls made."""
    import torch

    chunks = samples.chunks(batch_size if batched else 1)
    with torch.no_grad(), bar(label, "samples", total=len(samples)) as (progress, task):
        for chunk in chunks:
            call(prepared, *chunk)
            progress.advance(task, len(chunk[0]))
    return len(chunks)


_DTYPE_SCHEME = {"torch.int8": "int8", "torch.int16": "a16w8", "torch.uint8": "uint8"}
_ANNOTATION = "quantization_annotation"


def module_path(node) -> str | None:
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
