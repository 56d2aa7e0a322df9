"""Graph rewrites that compute exactly what the exported model computes, in a form the
Ethos-U lowering handles better (`lowering.rewrites`).

They run on the exported float program, before quantization, so the quantizer annotates the
rewritten graph as it would any other. Each returns what it changed, for the manifest.
"""

from __future__ import annotations

from typing import Any, Callable

from .schema import REWRITES


def apply(program, names: list[str]) -> list[dict[str, Any]]:
    """Apply the named rewrites, in order, to `program` (an ExportedProgram) in place."""
    changes: list[dict[str, Any]] = []
    for name in names:
        changes += [{"rewrite": name, **c} for c in _BY_NAME[name](program.graph_module)]
    if changes:
        program.graph_module.recompile()
    return changes


def _pool_args(node) -> tuple[Any, list[int], list[int], list[int], bool, bool, Any]:
    """aten.avg_pool2d's arguments with their defaults filled in (an empty stride means the kernel)."""
    defaults = [None, None, [], [0, 0], False, True, None]
    args = list(node.args) + defaults[len(node.args):]
    for i, name in enumerate(("self", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")):
        if name in node.kwargs:
            args[i] = node.kwargs[name]

    def pair(v):
        v = list(v) if isinstance(v, (list, tuple)) else [v]
        return v * 2 if len(v) == 1 else v

    kernel = pair(args[1])
    stride = pair(args[2]) if args[2] else kernel
    return args[0], kernel, stride, pair(args[3]), bool(args[4]), bool(args[5]), args[6]


def avg_pool_crop(graph_module) -> list[dict[str, Any]]:
    """An unpadded average pool whose windows never reach its input's last rows or columns
    (e.g. a (24, 5) kernel on a 25x5 map) reads the input through a slice of just the part
    it averages; where a dimension then has one window, its stride becomes 1 (one window
    either way). The result is the same in every element: the same windows, the same
    divisor. Ethos-U55 needs an unpadded pool with stride <= 3 for kernels over 8, which the
    original form fails (the lowering pads or crops it), so it ran on the CPU and split
    the NPU program in two."""
    import torch

    pool, slice_op = torch.ops.aten.avg_pool2d.default, torch.ops.aten.slice.Tensor
    changes = []
    graph = graph_module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != pool:
            continue
        x, kernel, stride, padding, ceil_mode, count_include_pad, divisor = _pool_args(node)
        shape = x.meta["val"].shape
        sizes = [shape[-2], shape[-1]]
        if any(p != 0 for p in padding) or ceil_mode or not all(isinstance(s, int) for s in sizes):
            continue
        used, new_stride = [], []
        for size, k, s in zip(sizes, kernel, stride):
            windows = (size - k) // s + 1
            used.append((windows - 1) * s + k)
            new_stride.append(1 if windows == 1 else s)
        if used == sizes and new_stride == stride:
            continue
        source = x
        with graph.inserting_before(node):
            for dim, (size, keep) in enumerate(zip(sizes, used), start=len(shape) - 2):
                if keep == size:
                    continue
                cropped = graph.call_function(slice_op, (source, dim, 0, keep))
                # The quantizer reads shapes and module paths from meta (module-name overrides).
                cropped.meta = {k: v for k, v in node.meta.items() if k in ("nn_module_stack", "stack_trace", "source_fn_stack")}
                with source.meta["val"].fake_mode:
                    cropped.meta["val"] = slice_op(source.meta["val"], dim, 0, keep)
                source = cropped
        node.args = (source, kernel, new_stride, padding, ceil_mode, count_include_pad, divisor)
        node.kwargs = {}
        changes.append({
            "node": node.name, "input": list(sizes), "kernel": kernel,
            "stride": {"before": stride, "after": new_stride}, "reads": used,
        })
    return changes


_BY_NAME: dict[str, Callable[[Any], list[dict[str, Any]]]] = {"avg_pool_crop": avg_pool_crop}
assert set(_BY_NAME) == set(REWRITES), "schema.REWRITES names every rewrite here"
