"""Graph rewrites that compute what the exported model computes, in a form the Ethos-U
lowering handles better (`lowering.rewrites`).

They run on the exported float program before quantization, which then sees the rewritten
graph as it would any other. Each rewrite edits the program's module in place and returns
what it changed, for the manifest; the module is then exported again, so shapes and module
paths (which per-module overrides select on) are those of a fresh export.

torch is imported inside functions: the quantize stage's module imports this one on the
up-to-date path.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from ..config.schema import REWRITES

# Copied to the nodes a rewrite adds: the module path the quantizer's overrides select on.
_KEPT_META = ("nn_module_stack", "stack_trace", "source_fn_stack")


def apply(program, names: list[str], export: Callable[[Any], Any]) -> tuple[Any, list[dict[str, Any]]]:
    """(program with the named rewrites applied in order, what they changed). `export` turns
    the edited module into a program again; the program comes back unchanged when no
    rewrite found anything to do."""
    if not names:
        return program, []
    module = program.module(check_guards=False)
    changes: list[dict[str, Any]] = []
    for name in names:
        changes += [{"rewrite": name, **c} for c in _BY_NAME[name](module)]
    if not changes:
        return program, []
    module.graph.lint()
    module.recompile()
    return export(module), changes


def _add(graph, target, args: tuple, like) -> Any:
    node = graph.call_function(target, args)
    node.meta = {k: v for k, v in like.meta.items() if k in _KEPT_META}
    return node


def _args(node, names: tuple[str, ...], defaults: list[Any]) -> dict[str, Any]:
    """An ATen call's arguments by name, with the schema's defaults filled in."""
    args = dict(zip(names, defaults))
    args.update(zip(names, node.args))
    args.update(node.kwargs)
    return args


def _pair(v) -> list[int]:
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * 2 if len(v) == 1 else v


def _spatial(node) -> list[Any]:
    return list(node.meta["val"].shape[-2:])


# --- avg_pool_crop --------------------------------------------------------------------------


def avg_pool_crop(module) -> list[dict[str, Any]]:
    """An unpadded average pool whose windows never reach its input's last rows or columns
    (e.g. a (24, 5) kernel on a 25x5 map) reads the input through a slice of just the part
    it averages; where a dimension then has one window, its stride becomes 1 (one window
    either way). Every output is the same: the same windows, the same divisor. Ethos-U55
    needs an unpadded pool with stride <= 3 for kernels over 8, which the original form
    fails (the lowering pads or crops it), so it ran on the CPU and split the NPU program."""
    import torch

    pool, slice_op = torch.ops.aten.avg_pool2d.default, torch.ops.aten.slice.Tensor
    names = ("self", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    changes = []
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != pool:
            continue
        args = _args(node, names, [None, None, [], [0, 0], False, True, None])
        kernel = _pair(args["kernel_size"])
        stride = _pair(args["stride"]) if args["stride"] else kernel
        sizes = _spatial(args["self"])
        if (
            any(p != 0 for p in _pair(args["padding"]))
            or args["ceil_mode"]
            or not all(isinstance(s, int) for s in sizes)
        ):
            continue
        used, new_stride = [], []
        for size, k, s in zip(sizes, kernel, stride):
            windows = (size - k) // s + 1
            used.append((windows - 1) * s + k)
            new_stride.append(1 if windows == 1 else s)
        if used == sizes and new_stride == stride:
            continue
        source = args["self"]
        with graph.inserting_before(node):
            for dim, (size, keep) in zip((-2, -1), zip(sizes, used)):
                if keep != size:
                    source = _add(graph, slice_op, (source, dim, 0, keep), node)
        node.args = (source, kernel, new_stride, [0, 0], False, args["count_include_pad"], args["divisor_override"])
        node.kwargs = {}
        changes.append(
            {
                "node": node.name,
                "input": sizes,
                "kernel": kernel,
                "stride": {"before": stride, "after": new_stride},
                "reads": used,
            }
        )
    return changes


# --- conv_space_to_depth --------------------------------------------------------------------

# Apply to convolutions whose input has at most this many channels: the NPU's MAC array
# works on several input channels at a time, so a 1-channel input leaves most of it idle.
SPACE_TO_DEPTH_MAX_CHANNELS = 1


def _space_to_depth_plan(size: int, k: int, s: int, p: int) -> dict[str, int]:
    """One spatial dimension of a stride-s convolution (kernel k, zero padding p) computed as
    a stride-1 convolution over the space-to-depth map S[R, d] = P[s*R + d] of the padded
    input P: output y reads S rows y .. y + ceil(k/s) - 1. The new convolution zero-pads
    `conv_pad` rows itself (S rows that only padding reaches); the rest is an explicit pad
    (`before`, `after`; `after` < 0 crops rows the convolution never reads)."""
    out = (size + 2 * p - k) // s + 1
    kk = -(-k // s)
    rows = out + kk - 1  # S rows the output reads
    zero_top = p // s  # S rows made of padding only, at each end
    zero_bottom = max(0, rows - -(-(size + p) // s))
    conv_pad = min(zero_top, zero_bottom)
    before = p - s * conv_pad
    after = s * (rows - conv_pad) - p - size
    return {"out": out, "kernel": kk, "conv_pad": conv_pad, "before": before, "after": after}


def _space_to_depth_weight(weight, s: int, kkh: int, kkw: int):
    """The weights of the stride-1 convolution: w'[o, c*s*s + dy*s + dx, ky, kx] =
    w[o, c, s*ky + dy, s*kx + dx], the channel order of pixel_unshuffle; taps past the
    original kernel are zero."""
    import torch

    o, c, kh, kw = weight.shape
    with torch.no_grad():
        extended = torch.nn.functional.pad(weight.detach(), (0, s * kkw - kw, 0, s * kkh - kh))
        return (
            extended.view(o, c, kkh, s, kkw, s).permute(0, 1, 3, 5, 2, 4).reshape(o, c * s * s, kkh, kkw).contiguous()
        )


def conv_space_to_depth(module) -> list[dict[str, Any]]:
    """A strided convolution over an input with very few channels (the first layer of a
    keyword-spotting or audio network) computed as space-to-depth (pixel_unshuffle) of its
    input followed by a stride-1 convolution over s*s times the channels, with the weights
    rearranged (and zero-extended to a multiple of the stride). Every product and sum of the
    original is computed once, nothing else is added, and zero weights stay exactly zero
    after quantization, so in integer arithmetic the result is the same; the NPU then fills
    its MAC array with s*s times the input depth."""
    import torch

    conv = torch.ops.aten.conv2d.default
    names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
    pad_op, slice_op, unshuffle = (
        torch.ops.aten.constant_pad_nd.default,
        torch.ops.aten.slice.Tensor,
        torch.ops.aten.pixel_unshuffle.default,
    )
    changes = []
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != conv:
            continue
        args = _args(node, names, [None, None, None, [1, 1], [0, 0], [1, 1], 1])
        x, w_node, bias, groups = args["input"], args["weight"], args["bias"], args["groups"]
        stride, padding, dilation = _pair(args["stride"]), _pair(args["padding"]), _pair(args["dilation"])
        if w_node.op != "get_attr" or groups != 1 or dilation != [1, 1] or stride[0] != stride[1] or stride[0] < 2:
            continue
        weight = operator.attrgetter(w_node.target)(module)
        o, c, kh, kw = weight.shape
        sizes, s = _spatial(x), stride[0]
        if (
            c > SPACE_TO_DEPTH_MAX_CHANNELS
            or len(x.meta["val"].shape) != 4
            or not all(isinstance(v, int) for v in sizes)
        ):
            continue
        plans = [_space_to_depth_plan(size, k, s, p) for size, k, p in zip(sizes, (kh, kw), padding)]
        if [plan["out"] for plan in plans] != _spatial(node):  # the plan must reproduce the output shape
            continue
        kkh, kkw = plans[0]["kernel"], plans[1]["kernel"]
        rearranged = _space_to_depth_weight(weight, s, kkh, kkw)
        name = w_node.target.replace(".", "_") + "_space_to_depth"
        module.register_parameter(name, torch.nn.Parameter(rearranged, requires_grad=False))
        source = x
        with graph.inserting_before(node):
            for dim, plan in zip((-2, -1), plans):  # crop rows and columns the convolution never reads
                if plan["after"] < 0:
                    size = sizes[dim]
                    source = _add(graph, slice_op, (source, dim, 0, size + plan["after"]), node)
            explicit = [plans[1]["before"], max(0, plans[1]["after"]), plans[0]["before"], max(0, plans[0]["after"])]
            if any(explicit):
                source = _add(graph, pad_op, (source, explicit, 0.0), node)
            source = _add(graph, unshuffle, (source, s), node)
            new_weight = graph.get_attr(name)
        node.args = (source, new_weight, bias, [1, 1], [plans[0]["conv_pad"], plans[1]["conv_pad"]], [1, 1], 1)
        node.kwargs = {}
        if not w_node.users:  # the original weight is no longer read: drop it from the program
            owner, _, attr = w_node.target.rpartition(".")
            graph.erase_node(w_node)
            delattr(module.get_submodule(owner), attr)
        changes.append(
            {
                "node": node.name,
                "input": [c, *sizes],
                "kernel": [kh, kw],
                "stride": s,
                "after": {
                    "channels": c * s * s,
                    "kernel": [kkh, kkw],
                    "padding": [plans[0]["conv_pad"], plans[1]["conv_pad"]],
                    "explicit_pad": explicit,
                },
            }
        )
    return changes


_BY_NAME: dict[str, Callable[[Any], list[dict[str, Any]]]] = {
    "avg_pool_crop": avg_pool_crop,
    "conv_space_to_depth": conv_space_to_depth,
}
assert set(_BY_NAME) == set(REWRITES), "schema.REWRITES names every rewrite here"
