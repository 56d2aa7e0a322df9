"""The deployed program inside its NPU partitions, layer by layer (`ethosu-artifacts layers ID
--deployed`, docs/measurements.md "Inside the NPU partitions").

The TOSA check (tosa_check.py) compares what each partition hands back. Inside a partition
two tools help: the TOSA reference model prints every tensor it computes (dump_intermediates),
and ExecuTorch's Arm backend, given a debug mode, reports each TOSA operator it serializes
with the graph node it came from, whose `from_node` provenance torch.fx keeps across every
pass back to the PT2E program's own node names. The debug mode is a compile-spec entry, and
compile specs are serialized into the .pte, so the stored program is never built with it: a
second lowering runs here, in memory and without Vela, and its TOSA flatbuffers must equal
the artifact's `vela/part<i>.tosa` byte for byte, or nothing inside is compared.

For each quantized point of the PT2E program (its quantize nodes, as in layers.py), the TOSA
tensor compared is the last one, in the partition's order, of an operator that came from the
point's own op or from an op fused into it (the convolution under a ReLU), with the point's
dtype and number of values; compute operators before data moves (transpose, reshape). An
operator the backend created without provenance (a TABLE) is attributed by what it reads.
Its codes, in the point's logical layout (a 4-D compute output is NHWC), against the PT2E
model's codes at that point on the same inputs: the largest difference in LSBs and the share
of values that differ; `first_beyond_1_lsb`, where the deployed program first departs from
the PT2E model by more than rounding. The other points are listed by why: computed on the CPU,
a data move (its order is the partition's), a layout its shape does not tell, or no tensor of
its own. torch, ExecuTorch and the reference model load inside functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import tempfile
from pathlib import Path
from typing import Any

from ..files import markdown_table

# Operators that only move data: their output's order is the partition's choice (a flatten of
# an NHWC tensor may stay in NHWC order, the next layer's weights permuted to match).
_MOVES = {"TRANSPOSE", "RESHAPE", "IDENTITY", "CONST", "CONST_SHAPE"}
_HEADER = re.compile(r"^Name: (\S+) DType=(\w+) .*?Shape=\[([\d, ]*)\]", re.M)


@contextlib.contextmanager
def _recorded_operators(graph):
    """Within the block, each TOSA operator the Arm backend serializes, one list per partition
    in lowering order: its output tensor, the operator, the nodes of `graph` (the lowered
    program's) it came from, its dtype and shape. ExecuTorch creates one DebugHook per
    partition and calls add() per operator, so a subclass in its place records them."""
    import executorch.backends.arm.tosa.backend as backend

    original = backend.DebugHook
    partitions: list[list[dict[str, Any]]] = []

    class Recorder(original):  # type: ignore[misc, valid-type]
        def __init__(self, mode):
            super().__init__(mode)
            partitions.append([])

        def add(self, node, tosa_op, tosa_op_id):
            val = node.meta.get("val")
            partitions[-1].append({
                "tensor": str(tosa_op), "op": str(tosa_op_id).removeprefix("Op."), "origins": _origins(node, graph),
                "dtype": str(getattr(val, "dtype", "")), "shape": list(getattr(val, "shape", [])),
                "inputs": [a.name for a in node.all_input_nodes],
            })  # fmt: skip
            return super().add(node, tosa_op, tosa_op_id)

    backend.DebugHook = Recorder
    try:
        yield partitions
    finally:
        backend.DebugHook = original


def _origins(node, graph) -> set[str]:
    """The nodes of `graph` that `node` came from, by name: its from_node ancestry, followed
    until it reaches `graph`. Beyond, in the graphs the quantize stage exported, nodes are
    numbered otherwise (blocks.0's `add_3` there is blocks.1's `add_9` in `graph`)."""
    names, stack = set(), list(node.meta.get("from_node") or [])
    while stack:
        source = stack.pop()
        if source.graph_id == id(graph):
            names.add(source.name)
        else:
            stack.extend(source.from_node)
    return names


def debug_lowering(cfg, program) -> tuple[Any, list[bytes], list[list[dict[str, Any]]]]:
    """`program` lowered as lower.run_lower lowers it (EthosUPartitioner, the target's compile
    spec), with the Arm backend's debug mode on and without Vela: (the partitioned edge
    program, each partition's TOSA flatbuffer, each partition's recorded operators)."""
    import warnings

    from executorch.backends.arm.common.arm_compile_spec import ArmCompileSpec
    from executorch.backends.arm.ethosu import EthosUPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    from ..config import targets
    from . import vela_files

    with (
        tempfile.TemporaryDirectory(prefix="ethosu-debug-lower-") as workdir,
        warnings.catch_warnings(),
        contextlib.redirect_stdout(None),
        vela_files.capture(Path(workdir) / "vela", run_vela=False) as partitions,
        _recorded_operators(program.graph) as operators,
    ):
        warnings.simplefilter("ignore", FutureWarning)
        spec = targets.compile_spec(cfg.target).dump_intermediate_artifacts_to(str(Path(workdir) / "debug"))
        spec.dump_debug_info(ArmCompileSpec.DebugMode.JSON)
        edge = to_edge_transform_and_lower(
            program, partitioner=[EthosUPartitioner(spec)], compile_config=EdgeCompileConfig(_check_ir_validity=False)
        )
        tosa = [(p.folder / vela_files.TOSA_FILE).read_bytes() for p in partitions]
    return edge.exported_program(), tosa, operators


def _points(program) -> dict[str, dict[str, Any]]:
    """Each quantized point of `program` (by its quantize node): its name and module as
    layers.py gives them, its dtype and logical shape, `origins` (the op that computes it and,
    back to its quantized inputs, the ops fused into it) and `feeds` (the origins of the points
    it reads)."""
    from .layers import DQ, Q, _is, _module

    points: dict[str, dict[str, Any]] = {}
    for p in (n for n in program.graph.nodes if _is(n, Q)):  # in graph order: inputs come first
        val, src = p.meta.get("val"), p.args[0]
        # the quantize node itself: a requantization (quantize of a dequantize) is a RESCALE of its own
        origins, feeds, stack = {p.name}, set(), [src] if hasattr(src, "op") else []
        while stack:
            n = stack.pop()
            if _is(n, DQ):
                feeds |= points.get(getattr(n.args[0], "name", ""), {}).get("origins", set())
            elif n.op == "call_function" and n.name not in origins:
                origins.add(n.name)
                stack.extend(n.all_input_nodes)
        points[p.name] = {
            "name": getattr(src, "name", p.name),
            "module": _module(src) if hasattr(src, "op") else "",
            "origins": origins,
            "feeds": feeds,
            "dtype": str(getattr(val, "dtype", "")),
            "shape": list(getattr(val, "shape", [])),
        }
    return points


def _match(point: dict[str, Any], partitions: list[list[dict[str, Any]]]) -> tuple[int, dict[str, Any]] | None:
    """(partition, operator) holding the point, or None: among the operators with its dtype and
    size that came from its origins, the last compute operator, else the last data move. An
    operator the backend created with no provenance (ExecuTorch 1.5.1's TABLE for exp, rsqrt,
    gelu...) is the point's if it reads a tensor of an operator from the point's feeds."""
    numel = math.prod(point["shape"])
    fits = [(k, op) for k, ops in enumerate(partitions) for op in ops
            if op["dtype"] == point["dtype"] and math.prod(op["shape"]) == numel]  # fmt: skip
    found = [(k, op) for k, op in fits if op["origins"] & point["origins"]]
    if not found:
        made_by = [{op["tensor"]: op["origins"] for op in ops} for ops in partitions]
        found = [(k, op) for k, op in fits if not op["origins"]
                 and any(made_by[k].get(i, set()) & point["feeds"] for i in op["inputs"])]  # fmt: skip
    compute = [f for f in found if f[1]["op"] not in _MOVES]
    return (compute or found)[-1] if found else None


def _layout(held: list[int], shape: list[int]) -> str | None:
    """How a compute operator's output of shape `held` holds a point of logical `shape`: "nhwc"
    (the backend's layout of a 4-D activation), "same" (up to dimensions of size 1), or None
    where the shapes do not tell (the partition moved a transpose across it)."""
    if len(held) == 4 and len(shape) == 4 and [held[i] for i in (0, 3, 1, 2)] == shape:
        return "nhwc"
    return "same" if [d for d in held if d != 1] == [d for d in shape if d != 1] else None


def _logical(tensor, shape: list[int]):
    """A compute operator's dumped output (a numpy array) in the point's logical layout."""
    layout = _layout(list(tensor.shape), shape)
    return tensor.transpose(0, 3, 1, 2) if layout == "nhwc" else tensor.reshape(shape)


def _tensors(text: str, wanted: set[str]) -> dict[str, Any]:
    """The integer tensors named in `wanted`, from the reference model's intermediate dump."""
    import numpy as np

    out = {}
    for m in _HEADER.finditer(text):
        name, dtype, dims = m.groups()
        if name not in wanted or name in out or not dtype.startswith(("INT", "UINT")):
            continue
        end = text.find("\nNode type:", m.end())
        body = text[m.end() : end if end >= 0 else len(text)]
        shape = [int(d) for d in dims.replace(" ", "").split(",") if d]
        out[name] = np.array(re.findall(r"-?\d+", body), dtype=np.int64).reshape(shape)
    return out


def _placed(points, partitions, edge, graph) -> tuple[dict[str, tuple[int, dict[str, Any]]], dict[str, list[str]]]:
    """The points compared (name -> partition, operator) and the others by why not."""
    cpu = set()  # the nodes of `graph` (the lowered program's) the partitioned one still runs on the CPU
    for n in edge.graph.nodes:
        if n.op == "call_function" and "executorch_call_delegate" not in str(n.target):
            cpu |= _origins(n, graph)
    compared, why = {}, {"on_cpu": [], "moved": [], "layout": [], "no_tensor": []}
    for q, p in points.items():
        m = _match(p, partitions)
        if m is None:
            why["on_cpu" if p["origins"] & cpu else "no_tensor"].append(p["name"])
        elif m[1]["op"] in _MOVES:
            why["moved"].append(p["name"])
        elif _layout(m[1]["shape"], p["shape"]) is None:
            why["layout"].append(p["name"])
        else:
            compared[q] = m
    return compared, why


def compare(cfg, program, stored: list[bytes], samples, n: int) -> dict[str, Any]:
    """The deployed program inside its partitions against `program` (the quantize stage's,
    as the lowering took it) on the first `n` of `samples`, with `stored` the artifact's
    flatbuffers (see the module's docstring)."""
    import numpy as np
    import tosa_reference_model as reference

    from .layers import _capture
    from .lower import channels_last
    from .tosa_check import deployed_outputs, quiet_stderr
    from .vela_files import placeholder

    if cfg.lowering.io_layout == "nhwc":  # as the lowering did (lower.run_lower)
        program = channels_last(program, cfg.model.input_specs())
    edge, tosa, operators = debug_lowering(cfg, program)
    if tosa != stored or len(operators) != len(tosa):
        return {"status": "not compared", "reason": f"the debug lowering gave {len(tosa)} TOSA flatbuffer(s) that "
                f"differ from the artifact's {len(stored)}: its operators cannot be named"}  # fmt: skip
    points = _points(program)
    compared, why = _placed(points, operators, edge, program.graph)
    rows = {q: {"point": points[q]["name"], "module": points[q]["module"], "partition": k, "tensor": op["tensor"],
                "op": op["op"], "max_lsb_diff": 0, "differing": 0, "values": 0}
            for q, (k, op) in compared.items()}  # fmt: skip
    partition_of = {hashlib.sha256(t).hexdigest(): k for k, t in enumerate(tosa)}
    payloads = {hashlib.sha256(placeholder(t)).hexdigest(): t for t in tosa}  # the delegates' payloads here
    module = program.module()
    for i in range(n):
        dumps: list[tuple[int, str]] = []

        def run(graph, inputs, dumps=dumps):
            with tempfile.NamedTemporaryFile(suffix=".txt") as f, quiet_stderr():
                result = reference.run(graph, inputs, dump_intermediates=1, debug_filename=f.name)
                dumps.append((partition_of[hashlib.sha256(graph).hexdigest()], Path(f.name).read_text()))
            return result

        said = deployed_outputs(edge, payloads, samples, [i], run)
        if isinstance(said, str):
            return {"status": "not compared", "reason": said}
        expected = _capture(module, tuple(samples.select(slice(i, i + 1))))
        for k, text in dumps:
            found = _tensors(text, {r["tensor"] for r in rows.values() if r["partition"] == k})
            for q, row in rows.items():
                if row["partition"] == k and row["tensor"] in found:
                    want = expected[q].numpy().astype(np.int64)
                    diff = np.abs(_logical(found[row["tensor"]], list(want.shape)) - want)
                    row["max_lsb_diff"] = max(row["max_lsb_diff"], int(diff.max(initial=0)))
                    row["differing"] += int((diff > 0).sum())
                    row["values"] += int(diff.size)
    for row in rows.values():
        row["differing_share"] = round(row.pop("differing") / max(row.pop("values"), 1), 6)
    beyond = next((r for r in rows.values() if r["max_lsb_diff"] > 1), None)  # rows are in graph order
    return {"status": "done", "samples": n, "partitions": len(tosa), "points": len(points),
            "compared": list(rows.values()), "not_compared": why,
            # where the deployed program first departs from the PT2E model by more than rounding
            "first_beyond_1_lsb": beyond and {k: beyond[k] for k in ("point", "module", "op")}}  # fmt: skip


def of_artifact(m: dict[str, Any], artifact, cfg, quantized, samples) -> dict[str, Any]:
    """`compare` for a checked artifact (its manifest `m`): its quantize stage's result, the
    flatbuffers the artifact lists (read and checked), the first evaluation.tosa_samples of
    `samples` (the table's: the TOSA check's when they are the build's)."""
    from .. import numerics
    from ..store.artifacts import verified_bytes

    stored = [verified_bytes(artifact, m, f"vela/part{k}.tosa") for k in range(m["delegation"]["npu_partitions"])]
    with numerics.numeric_stage():
        return compare(cfg, quantized.program, stored, samples, min(len(samples), cfg.evaluation.tosa_samples))


_WHY = {
    "on_cpu": "computed on the CPU (PyTorch's ops in both)",
    "moved": "a reshape or transpose inside the partition, in an order the partition chooses",
    "layout": "held in a layout its shape does not tell (the partition moved a transpose across it)",
    "no_tensor": "not a tensor of its own in the partition (fused, or a view the backend removed)",
}


def report_section(d: dict[str, Any] | None) -> list[str]:
    """The comparison as markdown: the points compared, then the others by why."""
    if not d:
        return []
    out = ["", "## Inside the NPU partitions", ""]
    if d["status"] != "done":
        return [*out, f"Not compared: {d['reason']}."]
    rows = [[r["point"], r["module"] or "-", r["partition"], f"`{r['tensor']}`", r["op"], r["max_lsb_diff"],
             r["differing_share"]] for r in d["compared"]]  # fmt: skip
    worst = max((r["max_lsb_diff"] for r in d["compared"]), default=0)
    out += [
        f"The deployed program's TOSA, run on the TOSA reference model with its intermediate tensors, "
        f"against the PT2E quantized model, {d['samples']} samples, {len(d['compared'])} of {d['points']} "
        f"quantized points compared in {d['partitions']} partition(s): largest difference {worst} LSB.",
        "",
        markdown_table(
            ["point", "module", "partition", "TOSA tensor", "op", "max diff (LSB)", "values differing"], rows
        ),
    ]
    first = d["first_beyond_1_lsb"]
    if first:
        where = f"`{first['point']}` ({first['module'] or '-'}, a TOSA {first['op']})"
        out += ["", f"The first point beyond 1 LSB, in graph order: {where}; later ones may carry its difference."]
    for why, names in d["not_compared"].items():
        if names:
            shown = ", ".join(f"`{n}`" for n in names[:12]) + (
                f" and {len(names) - 12} more" if len(names) > 12 else ""
            )
            out += ["", f"Not compared, {_WHY[why]}: {shown}."]
    return out
