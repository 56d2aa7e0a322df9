"""The memory bill: what a firmware image must reserve to run a program, per memory region.

Read from the program itself (its serialized .pte) and the target's Vela .ini, never from a
rebuild, so `ethosu-artifacts export --firmware` derives the same figures from a stored
artifact:

- `pte`: the program (Vela's command streams and weights inside it) where the memory mode puts
  constant data (`const_mem_area`);
- `planned`: ExecuTorch's memory-planned activation buffers, one per memory id
  (`execution_plan.non_const_buffer_sizes`; id 0 is reserved for constants and never planned);
  the program's inputs and outputs live in them unless the plan left them unplanned;
- `method_allocator`: an estimate of what ExecuTorch's Method::init allocates besides the
  planned buffers, from the program's counts (see `method_allocator_estimate`);
- `npu_scratch`: the scratch (tensor arena) Vela asks for, the largest over the delegates:
  the Ethos-U backend takes it from ExecuTorch's temp allocator, which is reset after each
  delegate call;
- `npu_fast_scratch`: the arena cache (`arena_cache_size`) when the memory mode puts the cache
  in another memory than the arena (Dedicated_Sram).

Placement follows the .ini's memory mode: constants in `const_mem_area`, the NPU scratch in
`arena_mem_area`, the fast scratch in `cache_mem_area`, and the CPU's read-write buffers
(planned, method allocator) with the arena, the one memory the mode lets both the CPU and the
NPU write. Each area's AXI port names its memory (`axiN_port` of the system config).

ExecuTorch's serializer is imported inside functions: budgets.py (for `kib`) and the export's
firmware module import this one on paths that load no executorch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from ..config import targets
from ..config.schema import TargetConfig
from ..files import markdown_table

# Bytes of one element per ExecuTorch ScalarType (exir/scalar_type.py numbering).
_ELEMENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 12: 1, 13: 1, 15: 2}
# Method::init on a 32-bit Cortex-M (runtime/executor/method.cpp, tensor_parser): one EValue
# per value (8-byte payload + tag), per tensor a TensorImpl (its pointers and counts, rounded
# up) and its sizes (int32), strides (int32) and dim order (uint8) arrays; per instruction its
# kernel pointer and the EValue pointers of its arguments; per delegate the BackendDelegate
# and the Ethos-U backend's handle (its Vela handles); plus the Method itself. Every
# allocation may lose up to 16 bytes to alignment. An estimate, with a stated margin in
# memory.h: the runtime on a board is the only measurement.
EVALUE_BYTES = 16
TENSOR_IMPL_BYTES = 64
INSTRUCTION_BYTES = 16
ARG_POINTER_BYTES = 4
DELEGATE_BYTES = 256
METHOD_BYTES = 1024
ALIGNMENT_SLACK = 16
# What memory.h adds to an estimated figure (measured figures get none).
ESTIMATE_MARGIN = 0.25


@dataclass
class ProgramFacts:
    """What the serialized program says about its memory (one method: forward)."""

    pte_bytes: int
    planned: list[int]  # bytes per memory id 1..n
    values: int
    tensors: int
    tensor_dims: int  # sum of the tensors' ranks
    instructions: int
    arguments: int  # argument references over all instructions
    delegates: int
    scratch: list[int]  # Vela scratch bytes per delegate
    io_planned: bool  # the inputs and outputs are inside the planned buffers
    inputs: list[int]  # bytes per input tensor
    outputs: list[int]  # bytes per output tensor


def vela_blocks(blob: bytes) -> dict[str, bytes]:
    """The named blocks of an Ethos-U delegate payload (ExecuTorch arm_vela.vela_compile's
    format: a 16-byte name, a 16-byte header starting with the int32 length, the data padded
    to 16 bytes)."""
    blocks, off = {}, 0
    while off + 32 <= len(blob):
        name = blob[off : off + 16].split(b"\x00", 1)[0].decode("ascii", "replace")
        (size,) = struct.unpack_from("<i", blob, off + 16)
        if size < 0 or off + 32 + size > len(blob):
            raise ValueError(f"Vela block {name!r} runs past the payload")
        blocks[name] = blob[off + 32 : off + 32 + size]
        off += 32 + (size + 15) // 16 * 16
        if name == "vela_end_stream":
            break
    return blocks


def program_facts(data: bytes) -> ProgramFacts:
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import Tensor

    program = deserialize_pte_binary(data).program
    (plan,) = [p for p in program.execution_plan if p.name == "forward"] or program.execution_plan[:1]
    tensors = [v.val for v in plan.values if isinstance(v.val, Tensor)]

    def nbytes(index: int) -> int:
        t = plan.values[index].val
        if not isinstance(t, Tensor):
            return 0
        n = 1
        for d in t.sizes:
            n *= int(d)
        return n * _ELEMENT_BYTES.get(int(t.scalar_type), 4)

    io = [plan.values[i].val for i in [*plan.inputs, *plan.outputs]]
    scratch = []
    for delegate in plan.delegates:
        if delegate.processed.location.name != "INLINE":
            continue
        blob = bytes(program.backend_delegate_data[delegate.processed.index].data)
        size = vela_blocks(blob).get("scratch_size")
        if size is not None and len(size) >= 4:
            scratch.append(struct.unpack("<I", size[:4])[0])
    instructions = [i for chain in plan.chains for i in chain.instructions]
    return ProgramFacts(
        pte_bytes=len(data),
        planned=[int(n) for n in plan.non_const_buffer_sizes[1:]],
        values=len(plan.values),
        tensors=len(tensors),
        tensor_dims=sum(len(t.sizes) for t in tensors),
        instructions=len(instructions),
        arguments=sum(len(getattr(i.instr_args, "args", []) or []) for i in instructions),
        delegates=len(plan.delegates),
        scratch=scratch,
        io_planned=all(getattr(t, "allocation_info", None) is not None for t in io if isinstance(t, Tensor)),
        inputs=[nbytes(i) for i in plan.inputs],
        outputs=[nbytes(i) for i in plan.outputs],
    )


def method_allocator_estimate(f: ProgramFacts) -> int:
    per_tensor = TENSOR_IMPL_BYTES + 3 * ALIGNMENT_SLACK
    allocations = (
        f.values * EVALUE_BYTES
        + f.tensors * per_tensor
        + f.tensor_dims * (4 + 4 + 1)
        + f.instructions * (INSTRUCTION_BYTES + ALIGNMENT_SLACK)
        + f.arguments * ARG_POINTER_BYTES
        + f.delegates * DELEGATE_BYTES
        + METHOD_BYTES
    )
    return int(allocations)


def _memory_of(target: TargetConfig) -> dict[str, Any]:
    """The memory each area of the target's memory mode lies in: {const, arena, cache} ->
    "sram" | "flash" | "dram" (the AXI port's memory in the system config)."""
    system = targets.ini_section(target.config_ini, f"System_Config.{targets.resolved_system_config(target)}")
    kinds = {"Sram": "sram", "OffChipFlash": "flash", "OnChipFlash": "flash", "Dram": "dram"}
    out: dict[str, Any] = {
        area: kinds.get(system.get(f"{axi}_port", "Sram"), "sram") for area, axi in targets.mode_areas(target).items()
    }
    out["arena_cache_size"] = targets.arena_cache_size(target)
    return out


def bill(data: bytes, target: TargetConfig) -> dict[str, Any]:
    """The memory bill of program bytes `data` built for `target` (see the module docstring)."""
    f = program_facts(data)
    where = _memory_of(target)
    cache_separate = where["cache"] != where["arena"]
    parts = {
        "pte": {"bytes": f.pte_bytes, "region": where["const"], "how": "measured"},
        "planned": {"bytes": sum(f.planned), "region": where["arena"], "how": "measured"},
        "method_allocator": {
            "bytes": method_allocator_estimate(f),
            "region": where["arena"],
            "how": "estimated",
        },
        "npu_scratch": {"bytes": max(f.scratch, default=0), "region": where["arena"], "how": "measured"},
        "npu_fast_scratch": {
            "bytes": where["arena_cache_size"] if cache_separate and f.delegates else 0,
            "region": where["cache"],
            "how": "configured",
        },
    }
    io = {"inputs": f.inputs, "outputs": f.outputs, "inside_planned": f.io_planned}
    if not f.io_planned:  # the application provides them: they count where the CPU writes
        parts["io"] = {"bytes": sum(f.inputs) + sum(f.outputs), "region": where["arena"], "how": "measured"}
    regions: dict[str, int] = {}
    for part in parts.values():
        regions[part["region"]] = regions.get(part["region"], 0) + part["bytes"]
    return {
        "memory_mode": targets.resolved_memory_mode(target),
        "parts": parts,
        "planned_buffers": [{"mem_id": i + 1, "bytes": n} for i, n in enumerate(f.planned)],
        "scratch_per_delegate": f.scratch,
        "io": io,
        "regions": {k: regions[k] for k in sorted(regions)},
        "counts": {
            "values": f.values,
            "tensors": f.tensors,
            "instructions": f.instructions,
            "delegates": f.delegates,
        },
    }


def round16(n: float) -> int:
    return int(-(-n // 16) * 16)


# The pools firmware reserves for a program, as ExecuTorch's Arm runner names them: its
# ET_ARM_BAREMETAL_* pool sizes and the input sections of its linker scripts.
POOL_SECTIONS = {
    "pte": "network_model_sec",  # model_pte.h's array (firmware.model_pte_h)
    "method_pool": "method_allocator_sec",  # arm_executor_runner.cpp: section("method_allocator_sec")
    "temp_pool": ".bss.tensor_arena",
    "fast_scratch": ".bss.ethosu_scratch",
    "io": ".bss.ethosu_build_io",
}
# What of the memory mode each pool must sit on: the NPU reads the program's weights in place
# (Vela's const area) and takes its scratch from the temp pool (the arena) and its fast scratch
# (the cache); the method pool and unplanned IO are the CPU's alone.
POOL_AREAS = {"pte": "const", "temp_pool": "arena", "fast_scratch": "cache", "method_pool": None, "io": None}


def pools(bill: dict[str, Any]) -> dict[str, int]:
    """The bytes of each pool firmware reserves (16-byte multiples): the program; the method
    allocator pool (the planned buffers and the method allocator's estimate with its
    ESTIMATE_MARGIN); the temp pool (Vela's largest scratch, no margin); the fast scratch
    (Dedicated_Sram); the inputs and outputs when the plan left them unplanned."""
    parts = bill["parts"]
    method = parts["method_allocator"]["bytes"] * (1 + ESTIMATE_MARGIN)
    out = {
        "pte": round16(parts["pte"]["bytes"]),
        "method_pool": round16(parts["planned"]["bytes"] + method),
        "temp_pool": max(16, round16(parts["npu_scratch"]["bytes"])),
        "fast_scratch": round16(parts["npu_fast_scratch"]["bytes"]),
        "io": round16(parts["io"]["bytes"]) if "io" in parts else 0,
    }
    return {k: v for k, v in out.items() if v}


def kib(n: int) -> float:
    return round(n / 1024, 3)


# --- in report.md ---------------------------------------------------------------------

MEMORY_PARTS = {
    "pte": "model.pte (command streams, weights, program)",
    "planned": "ExecuTorch planned buffers (activations, IO)",
    "method_allocator": "ExecuTorch method allocator (values, tensors, kernels)",
    "npu_scratch": "NPU scratch (Vela tensor arena)",
    "npu_fast_scratch": "NPU fast scratch (arena cache)",
    "io": "input and output buffers (not planned)",
}


def report_section(bill: dict[str, Any] | None) -> list[str]:
    """The memory bill in report.md (the vela stage's section: vela.py)."""
    if not bill:
        return []
    # In a fixed order: a bill read back from the stage cache has its keys sorted, one computed
    # in place does not, and the same build must render the same report.md.
    order = [*MEMORY_PARTS, *sorted(set(bill["parts"]) - set(MEMORY_PARTS))]
    rows = [
        [MEMORY_PARTS.get(k, k), bill["parts"][k]["region"], f"{bill['parts'][k]['bytes']:,}", bill["parts"][k]["how"]]
        for k in order
        if k in bill["parts"] and bill["parts"][k]["bytes"]
    ]
    rows += [["**total**", region, f"**{n:,}**", ""] for region, n in sorted(bill["regions"].items())]
    planned = ", ".join(f"id {b['mem_id']}: {b['bytes']:,} B" for b in bill["planned_buffers"]) or "none"
    return [
        "",
        f"## Memory bill ({bill['memory_mode']})",
        "",
        markdown_table(["part", "region", "bytes", "how"], rows),
        "",
        f"Planned buffers per memory id: {planned}. The method allocator's figure is an estimate from the "
        "program's counts; `ethosu-artifacts export --firmware` writes these sizes, with its margin, to memory.h "
        "(docs/deploying.md).",
    ]
