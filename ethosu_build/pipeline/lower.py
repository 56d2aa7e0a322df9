"""Stage `lower`: the quantized program -> EthosUPartitioner -> TOSA -> .pte, once per TOSA
specification.

The Ethos-U backend's own Vela call is stood in for (vela_files.capture): each NPU partition gets
a placeholder payload naming its TOSA flatbuffer, so targets and Vela settings that share a
TOSA specification share this stage, and the vela stage fills the payloads in per target.
Also here: which operators stay on the CPU and why (delegation_report), and what the
firmware must provide (runtime_contract).

torch and ExecuTorch are imported inside functions: pipeline/build.py imports this module on the
up-to-date path.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import targets
from ..config.schema import BuildConfig
from ..errors import BuildError, EthosuError
from ..files import markdown_table
from ..store.cache import Entry
from .model_checks import example_inputs
from .quantize import Quantize, Quantized, io_qparams
from .quantizer import module_path
from .stage import Run, Stage


@dataclass
class Lowered:
    template: bytes  # the .pte with a placeholder payload per NPU partition
    tosa: list[bytes]  # each partition's TOSA flatbuffer
    info: dict[str, Any]  # delegation, partitions, retargetable
    quant_info: dict[str, Any]  # the quantize stage's info: a cached lowering needs no quantize stage

    def save(self, folder: Path) -> None:
        (folder / "template.pte").write_bytes(self.template)
        for i, flatbuffer in enumerate(self.tosa):
            (folder / f"part{i}.tosa").write_bytes(flatbuffer)
        (folder / "info.json").write_text(json.dumps(self.info, indent=1, sort_keys=True))
        (folder / "quantize.json").write_text(json.dumps(self.quant_info, indent=1, sort_keys=True))

    @classmethod
    def load(cls, entry: Entry) -> Lowered:
        info = entry.read_json("info.json")
        tosa = [entry.read(f"part{i}.tosa") for i in range(int(info["partitions"]))]
        return cls(entry.read("template.pte"), tosa, info, entry.read_json("quantize.json"))


class Lower(Stage[Lowered]):
    name = "lower"
    version = 7
    result = Lowered

    @classmethod
    def key_inputs(cls, cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
        return {
            "quantize": keys["quantize"],
            # The partitioner and the TOSA passes see the target only through its TOSA spec.
            "tosa_spec": targets.tosa_spec_string(cfg.target.accelerator),
            "cpu_qdq_kernels": cfg.target.cpu_qdq_kernels,
            "io_layout": cfg.lowering.io_layout,
        }

    @classmethod
    def manifest(cls, run: Run) -> dict[str, Any]:
        lowered = run.get(Lower)
        quant = lowered.quant_info
        return {
            # What the lowering did beyond ExecuTorch's defaults (each computes the same outputs).
            "lowering": {
                "io_layout": run.cfg.lowering.io_layout,
                "rewrites": quant.get("rewrites", []),
                "unmatched": quant.get("rewrites_unmatched", []),  # listed rewrites that found nothing to do
            },
            "delegation": lowered.info["delegation"],
        }

    @staticmethod
    def report(m: dict[str, Any], vela_dir: Path) -> list[str]:
        return _delegation_section(m) + _runtime_section(m["delegation"].get("runtime"))

    @classmethod
    def inputs(cls, run: Run) -> tuple:
        return (run.get(Quantize),)

    @classmethod
    def compute(cls, run: Run, quantized: Quantized) -> Lowered:
        pte, info, _, files = run_lower(run.cfg, quantized.program, run.inspect_lowering)
        return Lowered(pte, [files[f"part{i}.tosa"] for i in range(info["partitions"])], info, quantized.info)


_CONTROL_FLOW_OPS = ("cond", "while_loop")


def _op_name(node) -> str:
    return str(getattr(node.target, "__name__", node.target)).replace("::", ".")


@contextlib.contextmanager
def _partitioner_reasons() -> Any:
    """Collect the reasons the TOSA partitioner gives for each node it rejects, by node name."""
    import executorch.backends.arm.tosa.partitioner as partitioner

    reasons: dict[str, str] = {}
    original = partitioner.WhyNoPartitionReporter

    class Recorder(original):  # type: ignore[misc, valid-type]
        def report_reject(self, node, reason):
            reasons.setdefault(node.name, reason)
            super().report_reject(node, reason)

    partitioner.WhyNoPartitionReporter = Recorder
    try:
        yield reasons
    finally:
        partitioner.WhyNoPartitionReporter = original


def _macs(node) -> int:
    """Multiply-accumulates of a convolution or matrix product left on the CPU (0 for any
    other op), from the shapes the graph carries."""
    name = _op_name(node)
    out = node.meta.get("val")
    if not hasattr(out, "numel"):
        return 0
    args = [a.meta.get("val") if hasattr(a, "meta") else None for a in node.args]
    if "convolution" in name or name.startswith("aten.conv"):
        weight = args[1] if len(args) > 1 else None
        return int(out.numel() * (weight.numel() // weight.shape[0])) if hasattr(weight, "shape") else 0
    if any(k in name for k in ("linear", "addmm", ".mm", "bmm", "matmul")):
        # the reduced dimension: the last of the first matrix operand
        first = next((a for a in args if hasattr(a, "shape") and len(a.shape) >= 1), None)
        return int(out.numel() * first.shape[-1]) if first is not None else 0
    return 0


def delegation_report(graph_module, reasons: dict[str, str]) -> dict[str, Any]:
    """Which ops the partitioner delegated (NPU) and which stay on the CPU, with the
    partitioner's reason where it gave one."""
    partitions, cpu_ops = 0, []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if name == "executorch_call_delegate":
            partitions += 1
        elif name != "getitem":
            cpu_ops.append(
                {"op": name, "node": node.name, "module": module_path(node), "reason": reasons.get(node.name)}
            )
    delegated_nodes = [
        n
        for _, sub in graph_module.named_children()
        if hasattr(sub, "original_module")
        for n in sub.original_module.graph.nodes
        if n.op == "call_function"
    ]
    delegated = len(delegated_nodes)
    counts: dict[str, int] = {}
    for op in cpu_ops:
        counts[op["op"]] = counts.get(op["op"], 0) + 1
    compute = [op for op in cpu_ops if "quantize_per" not in op["op"]]
    # torch.cond / while_loop, by where they run (nested ones run where their parent does).
    control_flow = {
        "npu": [{"op": _op_name(n), "node": n.name} for n in delegated_nodes if _op_name(n) in _CONTROL_FLOW_OPS],
        "cpu": [{"op": op["op"], "node": op["node"]} for op in cpu_ops if op["op"] in _CONTROL_FLOW_OPS],
    }
    return {
        "npu_partitions": partitions,
        "npu_ops": delegated,
        "control_flow": control_flow,
        "cpu_op_count": len(cpu_ops),
        "cpu_compute_op_count": len(compute),
        "cpu_op_counts": counts,
        "cpu_ops": cpu_ops,
        # MACs of the convolutions and matrix products left on the CPU; the NPU's are Vela's.
        "cpu_macs": sum(_macs(n) for n in graph_module.graph.nodes if n.op == "call_function"),
    }


def runtime_contract(edge_program, quantized, delegation: dict[str, Any]) -> dict[str, Any]:
    """What the firmware must provide: CPU kernels, and the program's inputs and outputs (every
    one, in the order the runtime hands them over) with the quantization applied at the
    boundary (the NPU scratch size is in the Vela metrics)."""

    def tensors(nodes):
        entries = []
        for n in nodes:
            val = n.meta["val"]
            entry = {"shape": list(val.shape), "dtype": str(val.dtype).replace("torch.", "")}
            if val.dim() == 4:  # the memory layout the firmware must use for this tensor
                entry["layout"] = {(0, 1, 2, 3): "NCHW", (0, 2, 3, 1): "NHWC"}.get(
                    tuple(val.dim_order()), str(val.dim_order())
                )
            entries.append(entry)
        return entries

    def user_outputs(program, values: list) -> list:  # not the buffers a program writes back
        specs = program.graph_signature.output_specs
        if len(specs) != len(values):
            return values
        return [v for v, spec in zip(values, specs) if spec.kind.name == "USER_OUTPUT"]

    graph = edge_program.graph_module.graph
    user_inputs = set(edge_program.graph_signature.user_inputs)
    inputs = tensors([n for n in graph.nodes if n.op == "placeholder" and n.name in user_inputs])
    outs = user_outputs(edge_program, list(next(n for n in graph.nodes if n.op == "output").args[0]))
    outputs = tensors([a for a in outs if hasattr(a, "meta")])  # every output, in the program's order
    q_in, dq_out = io_qparams(quantized)
    dq_out = user_outputs(quantized, dq_out)
    for entries, qs in ((inputs, q_in), (outputs, dq_out)):
        for entry, q in zip(entries, qs if len(qs) == len(entries) else []):
            if q is not None:
                entry["quantization"] = {"scale": q[0], "zero_point": q[1], "dtype": str(q[2]).replace("torch.", "")}
    return {"cpu_kernels": sorted(delegation["cpu_op_counts"]), "inputs": inputs, "outputs": outputs}


def channels_last(program, specs: list):
    """The program exported again with channels-last example inputs (every 4-D float32 one):
    such an input then has dim order (0, 2, 3, 1), which ExecuTorch's Arm backend passes to
    the NPU as NHWC with no transpose, and the layout propagates to the outputs it reaches.
    Same ops, same values."""
    import torch

    examples = tuple(
        x.to(memory_format=torch.channels_last) if x.dim() == 4 and x.is_floating_point() else x
        for x in example_inputs(specs)
    )
    return torch.export.export(program.module(check_guards=False), examples)


def run_lower(
    cfg: BuildConfig,
    quantized,
    inspect: Callable[[Any, dict[str, bytes]], None] | None = None,
    run_vela: bool = False,
) -> tuple[bytes, dict[str, Any], str, dict[str, bytes]]:
    """EthosUPartitioner -> TOSA -> .pte bytes, with a placeholder payload per NPU partition
    (run_vela=False, the shared lowering that run_vela() completes per target), or with Vela
    run in place for cfg.target (run_vela=True, the fallback for programs that cannot be
    retargeted).

    `inspect(edge_program, tosa_by_payload)`, if given, sees the partitioned program before
    the CPU-side passes and serialization change it (the TOSA check runs there). Returns
    (pte, info, Vela's console text, files): files are each partition's TOSA flatbuffer as
    `part<i>.tosa` and, with run_vela, Vela's CSVs (see vela_files.collect). A graph the
    partitioner or Vela rejects raises BuildError naming the configuration."""
    from executorch.backends.arm.ethosu import EthosUPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    from . import pte, vela_files

    t = cfg.target
    console = io.StringIO()
    info: dict[str, Any] = {}
    if cfg.lowering.io_layout == "nhwc":
        quantized = channels_last(quantized, cfg.model.input_specs())
    try:
        # Vela prints its report to stdout; keep it for the job log instead of the terminal.
        # The lowering passes warn about torch APIs they use; those are not the user's concern.
        with (
            contextlib.redirect_stdout(console),
            warnings.catch_warnings(),
            tempfile.TemporaryDirectory(prefix="ethosu-lower-") as workdir,
            vela_files.capture(Path(workdir) / "vela", run_vela) as partitions,
            _partitioner_reasons() as reasons,
        ):
            warnings.simplefilter("ignore", FutureWarning)
            edge = to_edge_transform_and_lower(
                quantized,
                partitioner=[EthosUPartitioner(targets.compile_spec(t))],
                compile_config=EdgeCompileConfig(_check_ir_validity=False),
            )
            if inspect is not None:
                inspect(
                    edge.exported_program(),
                    {p.processed_sha256: (p.folder / vela_files.TOSA_FILE).read_bytes() for p in partitions},
                )
            if t.cpu_qdq_kernels == "cortex_m":
                # As ExecuTorch's aot_arm_compiler: boundary (de)quantize -> cortex_m:: kernels.
                from executorch.backends.cortex_m.passes.replace_quant_nodes_pass import ReplaceQuantNodesPass

                edge = edge.transform([ReplaceQuantNodesPass()])
            else:
                # The portable quantized kernels' out variants, which to_executorch needs, are
                # registered by loading their AOT library.
                import executorch.kernels.quantized  # noqa: F401
            delegation = delegation_report(edge.exported_program().graph_module, reasons)
            delegation["runtime"] = runtime_contract(edge.exported_program(), quantized, delegation)
            program = edge.to_executorch(config=ExecutorchBackendConfig(extract_delegate_segments=False))
            info["delegation"] = delegation
            reports = Path(workdir) / "reports"
            if run_vela:
                info["vela"] = vela_files.collect(partitions, reports)
            else:
                reports.mkdir()
                for p in partitions:
                    shutil.copyfile(p.folder / vela_files.TOSA_FILE, reports / f"part{p.index}.tosa")
                info["partitions"] = len(partitions)
                info["retargetable"] = pte.round_trips(program.buffer)
            files = {f.name: f.read_bytes() for f in sorted(reports.iterdir())}
    except EthosuError:
        raise
    except SystemExit as exc:
        raise vela_exited(cfg, exc, console.getvalue()) from exc
    except Exception as exc:
        raise lowering_failed(cfg, exc) from exc
    return program.buffer, info, console.getvalue(), files


def vela_exited(cfg: BuildConfig, exc: SystemExit, console: str) -> BuildError:
    """Vela ends with sys.exit on a command line it rejects. Flags are validated before any
    stage (validate.py), so this is a flag combination only Vela itself judges."""
    said = next((line for line in reversed(console.splitlines()) if line.strip()), "")
    return BuildError(
        f"Vela exited (status {exc.code!r}) for target {cfg.target.accelerator} with flags "
        f"{targets.vela_flags(cfg.target)} (target.vela_flags){': ' + said if said else ''}"
    )


def lowering_failed(cfg: BuildConfig, exc: BaseException) -> BuildError:
    t = cfg.target
    overrides = ", ".join(f"{e.describe()}:{e.scheme}" for e in cfg.overrides.values()) or "none"
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    first = first.split(" after the following passes:")[0]  # ExecuTorch lists every pass run before
    first = first if len(first) <= 500 else first[:500] + " ..."
    return BuildError(
        f"lowering failed for target {t.accelerator} with quantization {cfg.quantization.scheme}"
        f"{' (io ' + cfg.quantization.io + ')' if cfg.quantization.io else ''}, overrides {overrides}: "
        f"{type(exc).__name__}: {first}"
    )


# --- evaluate -------------------------------------------------------------------------------


# --- its sections of report.md ----------------------------------------------------------


def _delegation_section(m: dict[str, Any]) -> list[str]:
    d = m["delegation"]
    cf = d.get("control_flow", {})
    cf_text = "".join(
        f" Control flow on the {side.upper()}: {', '.join(c['op'] + ' (' + c['node'] + ')' for c in cf[side])}."
        for side in ("npu", "cpu")
        if cf.get(side)
    )
    out = [
        "",
        "## Delegation",
        "",
        f"{d['npu_partitions']} NPU partition(s), {d['npu_ops']} NPU op(s); {d['cpu_op_count']} op(s) on the CPU, "
        f"{d.get('cpu_compute_op_count', '-')} of them compute (not boundary quantize/dequantize).{cf_text}"
        + _mac_share(d, m.get("metrics", {}).get("vela", {}).get("total", {})),
        "",
    ]
    if d["cpu_ops"]:
        out.append(
            markdown_table(
                ["CPU op", "node", "module", "partitioner's reason"],
                [[o["op"], o["node"], o["module"], o.get("reason")] for o in d["cpu_ops"]],
            )
        )
    return out


def _mac_share(d: dict[str, Any], total: dict[str, Any]) -> str:
    """The share of the multiply-accumulates the NPU runs (Vela's count against the CPU's
    convolutions and matrix products)."""
    npu, cpu = total.get("macs", 0) or 0, d.get("cpu_macs")
    if cpu is None or not npu + cpu:
        return ""
    return f" The NPU runs {100 * npu / (npu + cpu):.1f}% of the MACs ({npu:,} of {npu + cpu:,})."


def _runtime_section(runtime: dict[str, Any] | None) -> list[str]:
    if not runtime:
        return []

    def boundary(x: dict[str, Any]) -> str:
        q = x.get("quantization")
        return f"{q['dtype']} scale {q['scale']:.6g} zp {q['zero_point']}" if q else "-"

    io = [
        [kind, x["shape"], x.get("layout"), x["dtype"], boundary(x)]
        for kind, xs in (("input", runtime["inputs"]), ("output", runtime["outputs"]))
        for x in xs
    ]
    return [
        "",
        "## Runtime contract",
        "",
        "CPU kernels: " + ", ".join(f"`{k}`" for k in runtime["cpu_kernels"]),
        "",
        markdown_table(["", "shape", "layout", "dtype", "quantized at the boundary as"], io),
    ]
