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
    quantizer.set_global(scheme_config(q.scheme, q.per_channel, qat))
    if q.io is not None:
        quantizer.set_io(scheme_config(q.io, q.per_channel, qat))
    for entry in cfg.overrides.values():
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


def calibrate(prepared, samples, batch_size: int, batched: bool, label: str = "calibrating") -> int:
    """Run the samples (data.Samples) through the observers, `batch_size` at a time when the
    export has a dynamic batch dimension (observer cost is per call), else one by one.
    Returns calls made."""
    import torch

    chunks = samples.chunks(batch_size if batched else 1)
    with torch.no_grad(), bar(label, "samples", total=len(samples)) as (progress, task):
        for chunk in chunks:
            prepared(*chunk)
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
