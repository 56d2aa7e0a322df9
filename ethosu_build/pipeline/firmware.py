"""What a Cortex-M + Ethos-U firmware build consumes, derived from a stored artifact alone
(`ethosu-artifacts export ID DIR --firmware`, docs/deploying.md). Nothing is rebuilt: the
program is the artifact's model.pte, the IO contract and memory bill come from its manifest,
the kernels from the program, the self-test vectors from the TOSA check the build stored.

- `model_pte.h`: the program as a 16-byte aligned C array in a named linker section, as
  ExecuTorch's Arm example runner declares it (`model_pte`, section `network_model_sec`);
- `model_io.h`: per input and output (every output of a model of several, in the program's
  order), name, shape, dtype, layout and boundary quantization;
  and the preprocessing (model.preprocess) a device applies to a raw frame, with its float
  steps folded into one multiply-add per channel, to the float input and to the quantized one;
- `memory.h`: the runner's pool sizes from the memory bill (pipeline/memory.py), with margin;
- `selected_ops.txt`: the CPU kernels the program calls, as ExecuTorch's selective build
  takes them (`EXECUTORCH_SELECT_OPS_LIST`, the Arm build script's `--select_ops_list`);
- `model.bpte`: a bundled program (executorch.devtools.bundled_program) whose test cases are
  the TOSA check's inputs and, as expected outputs, what the program as deployed computed on
  the TOSA reference model (every output).

ExecuTorch and numpy are imported inside functions: `ethosu-artifacts` loads this module only
for an export.
"""

from __future__ import annotations

import io
import math
import re
from typing import Any

from ..data import preprocess
from . import memory
from .memory import ESTIMATE_MARGIN

DEFAULT_SECTION = "network_model_sec"  # ExecuTorch examples/arm/executor_runner/pte_to_header.py
DEFAULT_BUNDLE_SAMPLES = 4
SECTION_NAME = re.compile(r"\A[A-Za-z_.$][A-Za-z0-9_.$]*\Z")  # whole, ASCII: it is pasted into C
_BYTES_PER_LINE = 16


def model_pte_h(pte: bytes, section: str) -> str:
    lines = [", ".join(f"0x{b:02x}" for b in pte[i : i + _BYTES_PER_LINE]) for i in range(0, len(pte), _BYTES_PER_LINE)]
    return "\n".join(
        [
            "/* model.pte as a C array: written by `ethosu-artifacts export --firmware`. */",
            "#pragma once",
            "#include <stddef.h>",
            "",
            f"#define MODEL_PTE_SIZE {len(pte)}u",
            "",
            "/* Defined in the one .c file that includes this header plainly (as ExecuTorch's Arm",
            " * executor_runner does); any other file defines MODEL_PTE_EXTERN before including it and",
            " * gets the declaration only, so two translation units link. */",
            "extern unsigned char model_pte[MODEL_PTE_SIZE];",
            "#ifndef MODEL_PTE_EXTERN",
            "/* 16-byte aligned: ExecuTorch reads the flatbuffer and the Ethos-U command streams in place. */",
            f'__attribute__((section("{section}"), aligned(16))) unsigned char model_pte[MODEL_PTE_SIZE] = {{',
            *(f"    {line}," for line in lines),
            "};",
            "#endif",
            "",
        ]
    )


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _c_ident(s: str) -> str:
    return re.sub(r"\W", "_", s).upper()


def model_io_h(m: dict[str, Any], names: dict[str, list[str]]) -> str:
    runtime = (m.get("delegation") or {}).get("runtime") or {}
    out = [
        f"/* The IO contract of {m['name']}/v{m['version']} (manifest delegation.runtime): written by",
        " * `ethosu-artifacts export --firmware`. A quantized boundary: real = scale * (q - zero_point). */",
        "#pragma once",
        "",
    ]
    for kind in ("inputs", "outputs"):
        entries = runtime.get(kind) or []
        prefix = "MODEL_INPUT" if kind == "inputs" else "MODEL_OUTPUT"
        out.append(f"#define {prefix}_COUNT {len(entries)}")
        for i, e in enumerate(entries):
            p = f"{prefix}_{i}"
            name = (names.get(kind) or [])[i] if i < len(names.get(kind) or []) else f"{kind[:-1]}_{i}"
            shape = [int(d) for d in e["shape"]]
            out += [
                f"#define {p}_NAME {_c_string(name)}",
                f"#define {p}_RANK {len(shape)}",
                f"#define {p}_SHAPE {{{', '.join(str(d) for d in shape)}}}",
                f"#define {p}_NUMEL {math.prod(shape)}",
                f"#define {p}_DTYPE {_c_string(e['dtype'])}",
                f"#define {p}_LAYOUT {_c_string(e.get('layout') or 'contiguous')}",
            ]
            q = e.get("quantization")
            if q:
                out += [
                    f"#define {p}_QUANTIZED 1",
                    f"#define {p}_QUANT_DTYPE {_c_string(q['dtype'])}",
                    f"#define {p}_SCALE {float(q['scale']):.17g}",
                    f"#define {p}_ZERO_POINT {int(q['zero_point'])}",
                ]
            else:
                out.append(f"#define {p}_QUANTIZED 0")
        out.append("")
    steps = ((m.get("config") or {}).get("model") or {}).get("preprocess") or []
    if steps:
        out += _preprocess_lines(m, steps, (runtime.get("inputs") or [{}])[0])
    return "\n".join(out) + ("\n" if out[-1] else "")


_QUANT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _float(v: float) -> str:
    """A C float literal that reads back as the same float32 (9 significant digits)."""
    text = f"{v:.9g}"
    return (text if any(c in text for c in ".e") else text + ".0") + "f"


def _floats(values: list[float]) -> str:
    return "{" + ", ".join(_float(v) for v in values) + "}"


def _preprocess_lines(m: dict[str, Any], steps: list[dict[str, Any]], first: dict[str, Any]) -> list[str]:
    """model.preprocess as constants: each step's parameters, then the float steps (scale,
    normalize) as input = A[c] * raw + B[c], and, for a quantized first input, straight to
    its quantized value: q = clamp(round(raw * QA[c] + QB[c]))."""
    model = m["config"]["model"]
    shape = model.get("input_shape") or (model.get("inputs") or [{}])[0].get("shape") or []
    layout = preprocess.layout(steps)
    channels = int(shape[1] if layout == "chw" else shape[-1]) if len(shape) == 4 else 1
    out = [
        "/* Preprocessing (model.preprocess): what a device applies to a raw frame to produce input 0, in order:",
        *(f" *   {i}. {preprocess.describe(s)}" for i, s in enumerate(steps, 1)),
        " * Pixel steps run on the decoded 8-bit image (Pillow's filters); the float steps on its values. */",
        f"#define MODEL_PREPROCESS_STEP_COUNT {len(steps)}",
    ]
    for s in steps:
        op = s["op"]
        if op == "color":
            out.append(f"#define MODEL_PREPROCESS_COLOR {_c_string(s['mode'])}")
        elif op in ("resize", "center_crop"):
            name = "RESIZE" if op == "resize" else "CROP"
            size = s["size"]
            if isinstance(size, int) and op == "resize":
                out.append(f"#define MODEL_PREPROCESS_RESIZE_SHORTER_SIDE {size}")
            else:
                h, w = (size, size) if isinstance(size, int) else size
                out += [f"#define MODEL_PREPROCESS_{name}_HEIGHT {h}", f"#define MODEL_PREPROCESS_{name}_WIDTH {w}"]
            if op == "resize":
                filt = _c_string(s.get("interpolation", "bilinear"))
                out.append(f"#define MODEL_PREPROCESS_RESIZE_INTERPOLATION {filt}")
        elif op == "scale":
            out.append(f"#define MODEL_PREPROCESS_SCALE_DIVISOR {_float(float(s.get('divisor', 255)))}")
        elif op == "normalize":
            for name in ("mean", "std"):
                values = s[name] if isinstance(s[name], list) else [s[name]]
                values = values * channels if len(values) == 1 else values
                out.append(f"#define MODEL_PREPROCESS_{name.upper()} {_floats([float(v) for v in values])}")
    a, b = preprocess.affine(steps, channels)
    out += [
        f"#define MODEL_PREPROCESS_LAYOUT {_c_string(layout)}",
        f"#define MODEL_PREPROCESS_CHANNELS {channels}",
        "/* The float steps in one multiply-add per channel c: input = A[c] * raw + B[c] */",
        f"#define MODEL_PREPROCESS_A {_floats(a)}",
        f"#define MODEL_PREPROCESS_B {_floats(b)}",
    ]
    q = first.get("quantization")
    if q and q.get("dtype") in _QUANT_RANGES:
        scale, zp = float(q["scale"]), int(q["zero_point"])
        lo, hi = _QUANT_RANGES[q["dtype"]]
        out += [
            "/* Raw value to input 0's quantized value, per channel c: "
            "q = clamp(round(raw * QA[c] + QB[c]), QMIN, QMAX) */",
            f"#define MODEL_INPUT_0_FROM_RAW_QA {_floats([x / scale for x in a])}",
            f"#define MODEL_INPUT_0_FROM_RAW_QB {_floats([x / scale + zp for x in b])}",
            f"#define MODEL_INPUT_0_FROM_RAW_QMIN {lo}",
            f"#define MODEL_INPUT_0_FROM_RAW_QMAX {hi}",
        ]
    return [*out, ""]


def memory_h(m: dict[str, Any]) -> str:
    bill = m["memory"]
    parts = bill["parts"]
    planned, method = parts["planned"]["bytes"], parts["method_allocator"]["bytes"]
    scratch, fast = parts["npu_scratch"]["bytes"], parts["npu_fast_scratch"]["bytes"]
    sizes = memory.pools(bill)
    method_pool = sizes["method_pool"]
    lines = [
        f"/* Memory pools for {m['name']}/v{m['version']} on {m['config']['target']['accelerator']},",
        f" * memory mode {bill['memory_mode']}: written by `ethosu-artifacts export --firmware` from the",
        " * manifest's memory bill (docs/deploying.md). Named as ExecuTorch's Arm example runner reads them;",
        " * define them before including this file to override. */",
        "#pragma once",
        "",
        f"#define ETHOSU_BUILD_PTE_BYTES {parts['pte']['bytes']}u  /* measured; placed in {parts['pte']['region']} */",
        f"#define ETHOSU_BUILD_PLANNED_BYTES {planned}u  /* measured: the program's planned buffers */",
        f"#define ETHOSU_BUILD_METHOD_ALLOCATOR_ESTIMATE_BYTES {method}u  /* estimated from the program's counts */",
        f"#define ETHOSU_BUILD_NPU_SCRATCH_BYTES {scratch}u  /* measured: Vela's largest scratch */",
        "",
        f"/* planned buffers + the method allocator's estimate with a {int(ESTIMATE_MARGIN * 100)}% margin, in "
        f"{parts['planned']['region']} */",
        "#ifndef ET_ARM_BAREMETAL_METHOD_ALLOCATOR_POOL_SIZE",
        f"#define ET_ARM_BAREMETAL_METHOD_ALLOCATOR_POOL_SIZE {method_pool}u",
        "#endif",
        f"/* the NPU scratch: the Ethos-U backend takes it from the temp allocator (no margin: Vela's figure), in "
        f"{parts['npu_scratch']['region']} */",
        "#ifndef ET_ARM_BAREMETAL_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE",
        f"#define ET_ARM_BAREMETAL_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE {sizes['temp_pool']}u",
        "#endif",
    ]
    fit = m.get("board")
    if fit:
        lines += ["", f"/* Placed on {fit['board']} as board.ld says: each pool's input section and its region. */"]
        for p in fit["pools"]:
            name = p["pool"].upper()
            lines += [f'#define ETHOSU_BUILD_{name}_SECTION "{p["section"]}"',
                      f'#define ETHOSU_BUILD_{name}_REGION "{p["region"] or p.get("closest") or "none"}"']  # fmt: skip
    if fast:
        lines += [
            f"/* the arena cache Vela compiled for (Dedicated_Sram), in {parts['npu_fast_scratch']['region']} */",
            "#ifndef ET_ARM_BAREMETAL_FAST_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE",
            f"#define ET_ARM_BAREMETAL_FAST_SCRATCH_TEMP_ALLOCATOR_POOL_SIZE {fast}u",
            "#endif",
        ]
    return "\n".join([*lines, ""])


def linker_fragment(m: dict[str, Any]) -> str:
    """board.ld: a GNU ld fragment with the board's regions (MEMORY) and an output section per
    pool (SECTIONS), each in the region the build placed it in (manifest `board`,
    placement.py). A region's firmware reserve is its own MEMORY region, <NAME>_FIRMWARE, at its
    start, for the firmware's code, data, heap and stack: the pools get the rest, so the link
    overflows exactly where the build said the program does not fit (a pool that fits nowhere
    is put in the region that came closest)."""
    fit = m["board"]
    regions = {r["name"]: r for r in fit["regions"]}
    memory_lines = []
    for r in fit["regions"]:
        attrs = "rx" if r["kind"] in ("flash", "mram") else "rwx"
        start, rest = r["cpu_address"], r["size"] - r["reserved"]
        if r["reserved"]:
            memory_lines.append(
                f"  {r['name']}_FIRMWARE ({attrs}) : ORIGIN = {start:#010x}, LENGTH = {r['reserved']:#x}"
            )
        if rest:
            memory_lines.append(f"  {r['name']} ({attrs}) : ORIGIN = {start + r['reserved']:#010x}, LENGTH = {rest:#x}")
    section_lines = []
    for p in fit["pools"]:
        region = p["region"] or p.get("closest")
        if region is None or not regions[region]["size"] - regions[region]["reserved"]:
            continue
        noload = "" if p["pool"] == "pte" else " (NOLOAD)"
        section_lines += [
            f"  .ethosu_build.{p['pool']}{noload} : ALIGN(16)",
            f"  {{\n    KEEP(*({p['section']}))\n    . = ALIGN(16);\n  }} > {region}",
        ]
    return "\n".join(
        [
            f"/* The memory map of {m['name']}/v{m['version']} on {fit['board']} ({fit['memory_mode']}): written by",
            " * `ethosu-artifacts export --firmware` from the build's placement (docs/boards.md). INCLUDE it",
            " * before the firmware's own SECTIONS (an input section goes to the first output section that",
            " * names it), and put the firmware's code, data, heap and stack in the <NAME>_FIRMWARE regions:",
            " * what board.regions.<NAME>.reserved keeps for it. The pools' arrays are named in memory.h. */",
            "MEMORY",
            "{",
            *memory_lines,
            "}",
            "",
            "SECTIONS",
            "{",
            *section_lines,
            "}",
            "",
        ]
    )


def program_operators(pte: bytes) -> list[str]:
    """The kernels the program calls, `namespace::name.overload`, as the runtime looks them up."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte).program
    ops = {f"{op.name}.{op.overload}" if op.overload else op.name for p in program.execution_plan for op in p.operators}
    return sorted(ops)


def io_names(m: dict[str, Any]) -> dict[str, list[str]]:
    """Input names from the config (model.inputs, or the one input of model.input_shape);
    output names, for a model of several outputs, as the evaluation named them (`output_<i>`,
    or a dict's keys: pipeline/outputs.py), else none (`output_<i>` in model_io.h)."""
    model = (m.get("config") or {}).get("model") or {}
    inputs = model.get("inputs") or []
    outputs = ((m.get("metrics") or {}).get("accuracy") or {}).get("outputs") or []
    runtime = ((m.get("delegation") or {}).get("runtime") or {}).get("outputs") or []
    named = [str(o.get("name")) for o in outputs] if len(outputs) == len(runtime) else []
    return {"inputs": [str(i.get("name")) for i in inputs] if inputs else ["input"], "outputs": named}


def bundled_program(pte: bytes, tosa_io: bytes, samples: int) -> tuple[bytes, int]:
    """model.bpte with the first `samples` test cases of the stored TOSA check (fewer if the
    check ran on fewer); returns the bytes and the number of cases."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import torch
    from executorch.devtools.bundled_program.config import MethodTestCase, MethodTestSuite
    from executorch.devtools.bundled_program.core import BundledProgram
    from executorch.devtools.bundled_program.serialize import serialize_from_bundled_program_to_flatbuffer

    with np.load(io.BytesIO(tosa_io), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    inputs = sorted((k for k in arrays if k.startswith("input_")), key=lambda k: int(k.split("_")[1]))
    outputs = sorted((k for k in arrays if k.startswith("output_")), key=lambda k: int(k.split("_")[1]))
    n = min(samples, *(len(arrays[k]) for k in inputs + outputs))
    cases = [
        MethodTestCase(
            inputs=[torch.from_numpy(np.ascontiguousarray(arrays[k][i : i + 1])) for k in inputs],
            expected_outputs=[torch.from_numpy(np.ascontiguousarray(arrays[k][i : i + 1])) for k in outputs],
        )
        for i in range(n)
    ]
    with tempfile.TemporaryDirectory(prefix="ethosu-bpte-") as tmp:
        path = Path(tmp) / "model.pte"
        path.write_bytes(pte)
        bundle = BundledProgram(None, [MethodTestSuite("forward", cases)], pte_file_path=str(path))
        return bytes(serialize_from_bundled_program_to_flatbuffer(bundle)), n
