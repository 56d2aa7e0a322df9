"""What the CPU adds: an estimate of the time the board's CPU spends on what stays off the NPU
(the boundary quantize/dequantize and any fallback operator), read from the program itself:
each kernel call of the .pte, its tensors' element counts (and MACs, for a convolution or
matrix product), at per-kernel costs for the board's CPU and its clock.

An estimate, labelled as one beside Vela's NPU figure: the costs below are a measurement where
one is public and otherwise derived from the cores' published pipelines; the FVPs model no CPU
timing, so only a board measures it (docs/boards.md, "What the CPU adds"). ExecuTorch is
imported inside functions.
"""

from __future__ import annotations

from typing import Any

from ..files import markdown_table

VERSION = 1  # of the costs below: part of a board build's vela key (vela.py), so new costs give new figures

# Cycles per element (per MAC for "portable_mac"), and per kernel call, on each CPU.
# - quantize: ExecuTorch's cortex_m::quantize_per_tensor (Helium, 16 elements per pass,
#   backends/cortex_m/ops/op_quantize_per_tensor.cpp). Cortex-M55: 9.1, measured: 1,365,831
#   cycles for a 1x3x224x224 input on an Alif E8 HP core (pytorch/executorch issue #17651).
#   Cortex-M85: 7, inferred (the same 64-bit Helium datapath, two cycles per vector
#   instruction on both cores, Arm-Examples/Helium-Optimization; the M85's dual-issue load
#   and store units, LLVM's ARMScheduleM85.td).
# - dequantize: cortex_m::dequantize_per_tensor (Helium, 16 per pass: a byte gather, four
#   converts, multiplies and stores): 4 and 3, inferred from the instruction count.
# - portable quantize/dequantize (quantized_decomposed::, target.cpu_qdq_kernels=portable):
#   scalar, 12 and 7 (quantize), 7 and 4 (dequantize), inferred.
# - cmsis_nn: other cortex_m:: kernels (CMSIS-NN int8 pool, add, mul, softmax, transpose with
#   Helium): 2 and 1.5 per element, inferred (byte gathers at one address per cycle).
# - portable: any other kernel (ExecuTorch's portable kernels, scalar, an element at a time
#   through function pointers): 30 and 20 per element; portable_mac: 30 and 18 per MAC
#   (an index computation per MAC, kernels/portable/cpu/op_convolution.cpp), inferred.
# - call: 3,000 cycles per kernel call (argument checks, resizing, dispatch), inferred.
COSTS: dict[str, dict[str, float]] = {
    "cortex-m55": {"quantize": 9.1, "dequantize": 4, "portable_quantize": 12, "portable_dequantize": 7,
                   "cmsis_nn": 2, "portable": 30, "portable_mac": 30, "call": 3000},
    "cortex-m85": {"quantize": 7, "dequantize": 3, "portable_quantize": 7, "portable_dequantize": 4,
                   "cmsis_nn": 1.5, "portable": 20, "portable_mac": 18, "call": 3000},
}  # fmt: skip
MEASURED = {("cortex-m55", "quantize")}  # the rest are inferred (see above)
_MAC_OPS = ("convolution", "linear", "addmm", "::mm", "bmm", "matmul")


def _kind(op: str) -> str:
    if op.startswith("cortex_m::"):
        if "dequantize_per_tensor" in op:
            return "dequantize"
        return "quantize" if "quantize_per_tensor" in op else "cmsis_nn"
    if op.startswith("quantized_decomposed::"):
        return "portable_dequantize" if "dequantize" in op else "portable_quantize"
    return "portable_mac" if any(k in op for k in _MAC_OPS) else "portable"


def kernel_calls(pte: bytes) -> list[dict[str, Any]]:
    """Each kernel call of the program's forward, in order: its operator and the element count
    of its largest tensor argument (its MACs for a convolution or matrix product)."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import KernelCall, Tensor

    program = deserialize_pte_binary(pte).program
    (plan,) = [p for p in program.execution_plan if p.name == "forward"] or program.execution_plan[:1]
    calls = []
    for chain in plan.chains:
        for instruction in chain.instructions:
            args = instruction.instr_args
            if not isinstance(args, KernelCall):
                continue  # a delegate call runs on the NPU
            op = plan.operators[args.op_index]
            name = f"{op.name}.{op.overload}" if op.overload else op.name
            shapes = [
                [int(d) for d in plan.values[i].val.sizes] for i in args.args if isinstance(plan.values[i].val, Tensor)
            ]
            numels = [_numel(s) for s in shapes]
            calls.append({"op": name, "elements": max(numels, default=0), "macs": _macs(name, shapes)})
    return calls


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _macs(op: str, shapes: list[list[int]]) -> int:
    """A convolution's or matrix product's MACs: its output's elements times the reduced
    dimension (the weight's elements per output channel, or the first operand's last dim)."""
    if len(shapes) < 2 or not any(k in op for k in _MAC_OPS):
        return 0
    out = _numel(shapes[-1])  # out variants: the output is the last tensor argument
    if "convolution" in op:
        weight = shapes[1]
        return out * (_numel(weight) // max(weight[0], 1)) if weight else 0
    first = shapes[1] if "addmm" in op else shapes[0]  # addmm(bias, mat1, mat2): mat1's last dim
    return out * (first[-1] if first else 1)


def estimate(pte: bytes, cpu: str, clock_hz: int, npu_ms: float) -> dict[str, Any]:
    """The CPU's time per inference on what stays off the NPU, per operator, and the total
    with Vela's NPU estimate (the NPU and the CPU take turns: ExecuTorch waits for each
    delegate call)."""
    costs = COSTS[cpu]
    rows: dict[str, dict[str, Any]] = {}
    for call in kernel_calls(pte):
        kind = _kind(call["op"])
        work = call["macs"] if kind == "portable_mac" and call["macs"] else call["elements"]
        cycles = costs["call"] + costs[kind] * work
        source = "measured" if (cpu, kind) in MEASURED else "inferred"
        row = rows.setdefault(call["op"], {"op": call["op"], "kind": kind, "calls": 0, "elements": 0, "macs": 0,
                                           "cycles": 0.0, "per_unit": costs[kind], "source": source})  # fmt: skip
        row["calls"] += 1
        row["elements"] += call["elements"]
        row["macs"] += call["macs"]
        row["cycles"] += cycles
    cycles = sum(r["cycles"] for r in rows.values())
    cpu_ms = 1000.0 * cycles / clock_hz
    return {
        "cpu": cpu,
        "clock_hz": clock_hz,
        "cycles": round(cycles),
        "cpu_ms": round(cpu_ms, 6),
        "npu_ms": npu_ms,
        "total_ms": round(cpu_ms + npu_ms, 6),
        "kernels": [{**r, "cycles": round(r["cycles"])} for r in rows.values()],
    }


def report_section(est: dict[str, Any] | None) -> list[str]:
    if not est:
        return []
    rows = [
        [k["op"], k["calls"], f"{k['elements']:,}", f"{k['macs']:,}" if k["macs"] else "-", k["per_unit"], k["source"],
         f"{k['cycles']:,}"]
        for k in est["kernels"]
    ]  # fmt: skip
    return [
        "",
        f"## What the CPU adds (an estimate, {est['cpu']} at {est['clock_hz'] / 1e6:g} MHz)",
        "",
        markdown_table(
            ["CPU kernel", "calls", "elements", "MACs", "cycles per element or MAC", "cost", "cycles"], rows
        ),
        "",
        f"CPU {est['cpu_ms']:.4g} ms + NPU {est['npu_ms']:.4g} ms (Vela's estimate) = **{est['total_ms']:.4g} ms** per "
        "inference. The CPU's figure is an estimate from the program's kernel calls and per-kernel costs "
        "(pipeline/cpu_cost.py, docs/boards.md: one measured, the rest inferred; each call adds 3,000 cycles); "
        "only a board measures it.",
    ]
