"""The build stages (export -> quantize -> lower -> vela, and evaluate) and their cache keys.

`lower` partitions and lowers to TOSA once per TOSA specification; `vela` compiles those
partitions for one target's Vela settings and fills them into the .pte (see pte.py), so
targets and Vela settings that share a TOSA specification share every stage but Vela.

Each stage key is the sha256 of canonical JSON of the stage name and version, the config
fields that change its output, the keys of the stages it consumes and the tool versions.
Paths, logging and launcher settings never enter a key. Keys are computed without importing
torch; the `run_*` functions import what they need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from . import data, targets
from .errors import BuildError, ConfigError, ConfigIssue
from .fingerprint import file_sha256, key_of, source_fingerprint, tool_versions_for_key
from .schema import TARGETS, BuildConfig

log = logging.getLogger(__name__)

# Bump a stage's version when its code changes what it produces.
STAGE_VERSIONS = {"export": 2, "quantize": 4, "lower": 6, "vela": 1, "evaluate": 4, "build": 3}
BATCH_DIM_MAX = 4096


@dataclass(frozen=True)
class StageKeys:
    export: str
    quantize: str
    lower: str
    vela: str
    evaluate: str
    build: str  # the artifact's identity: same key, same version

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _dataset_key(ds) -> dict[str, Any]:
    return {"data": data.fingerprint(ds.dataset), "num_samples": ds.num_samples, "batch_size": ds.batch_size, "seed": ds.seed}


def stage_keys(cfg: BuildConfig) -> StageKeys:
    m, t = cfg.model, cfg.target
    export = key_of({
        "stage": "export", "v": STAGE_VERSIONS["export"], "tools": tool_versions_for_key(),
        "factory": m.factory, "source": source_fingerprint(m.factory["_target_"]),
        "checkpoint": file_sha256(m.checkpoint) if m.checkpoint else None, "input_shape": m.input_shape,
    })
    quantization = dataclasses.asdict(cfg.quantization)
    qat = quantization.pop("qat")
    quantize_inputs = {
        "stage": "quantize", "v": STAGE_VERSIONS["quantize"], "export": export,
        # The quantizer's passes depend on the target only through its TOSA specification,
        # so targets that share one share the calibrated model.
        "tosa_spec": targets.tosa_spec_string(t.accelerator),
        "quantization": quantization,
        "rewrites": cfg.lowering.rewrites,  # applied to the float graph before the quantizer sees it
        # Order matters (a later override wins); the entries' names do not.
        "overrides": [dataclasses.asdict(e) for e in cfg.overrides.values()],
        "calibration": _dataset_key(cfg.calibration),
    }
    if qat is not None:  # the ranges come from training, not from the calibration set
        del quantize_inputs["calibration"]
        quantize_inputs["qat"] = {**qat, "data": data.fingerprint(qat["dataset"])}
    quantize = key_of(quantize_inputs)
    lower = key_of({
        "stage": "lower", "v": STAGE_VERSIONS["lower"], "quantize": quantize,
        # The partitioner and the TOSA passes see the target only through its TOSA spec.
        "tosa_spec": targets.tosa_spec_string(t.accelerator), "cpu_qdq_kernels": t.cpu_qdq_kernels,
        "io_layout": cfg.lowering.io_layout,
    })
    vela = key_of({
        "stage": "vela", "v": STAGE_VERSIONS["vela"], "lower": lower,
        "accelerator": t.accelerator,
        "system_config": targets.resolved_system_config(t), "memory_mode": targets.resolved_memory_mode(t),
        "config_ini": t.config_ini, "config_ini_sha256": file_sha256(targets.resolve_config_ini(t.config_ini)),
        "vela_flags": targets.vela_flags(t),
    })
    # Accuracy needs the quantized model, the TOSA check the lowered partitions: not Vela.
    evaluate = key_of({
        "stage": "evaluate", "v": STAGE_VERSIONS["evaluate"], "lower": lower,
        "evaluation": _dataset_key(cfg.evaluation),
        "tosa_check": cfg.evaluation.tosa_check, "tosa_samples": cfg.evaluation.tosa_samples,
    })
    build = key_of({
        "stage": "build", "v": STAGE_VERSIONS["build"], "evaluate": evaluate, "vela": vela,
        "budget": dataclasses.asdict(cfg.budget),
    })
    return StageKeys(export, quantize, lower, vela, evaluate, build)


# --- export ---------------------------------------------------------------------------------


def export_program(module, input_shape: list[int], dynamic_batch: bool = False):
    """torch.export of `module` on zeros of `input_shape`, or with its batch dimension kept
    symbolic (traced at batch 2, so torch cannot specialize it to 1)."""
    import torch

    if not dynamic_batch:
        return torch.export.export(module, (torch.zeros(input_shape),))
    batch = torch.export.Dim("batch", min=1, max=BATCH_DIM_MAX)
    return torch.export.export(module, (torch.zeros([2] + list(input_shape[1:])),), dynamic_shapes=({0: batch},))


def run_export(model, input_shape: list[int]) -> dict[str, Any]:
    """torch.export of the model: always the static batch-1 program, and also one with a
    dynamic batch dimension when torch can keep the batch symbolic, so calibration can run
    in batches (observer cost is per call). Returns {"static": ep, "dynamic": ep or None}."""
    from . import quantize

    static = export_program(model, input_shape)
    if quantize.control_flow(static.graph_module):
        # A branch predicate on the data holds for one sample; calibration runs sample by
        # sample through the quantizer's submodule-aware path (quantize_with_submodules).
        log.info("export: the model has control flow; no batch-dynamic export")
        return {"static": static, "dynamic": None}
    try:
        dynamic = export_program(model, input_shape, dynamic_batch=True)
    except Exception as exc:  # torch raises several types for a batch it cannot keep symbolic
        log.info("export: batch dimension cannot be dynamic (%s)", str(exc).splitlines()[0])
        dynamic = None
    return {"static": static, "dynamic": dynamic}


def program_bytes(program) -> bytes:
    """An ExportedProgram as torch.export.save writes it (a zip archive)."""
    import torch

    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def load_program(data: bytes):
    """torch.export.load of bytes from a verified cache entry (cache.Entry.read): the
    archive may unpickle, so only entries this user's key signed ever reach it (trust.py)."""
    import torch

    # A quantized program holds quantized_decomposed ops, which exist only once torchao's
    # PT2E module is imported; a fresh process that reads the cache must import it first.
    import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401

    return torch.export.load(io.BytesIO(data))


# --- quantize -------------------------------------------------------------------------------


def _prepare(cfg: BuildConfig, program):
    from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e

    from . import quantize

    # torch 2.13 inserts a guards node in .module() that the Arm quantizer passes reject.
    quantizer = quantize.make_quantizer(cfg.quantization, cfg.overrides, targets.compile_spec(cfg.target))
    return prepare_pt2e(program.module(check_guards=False), quantizer)


def run_quantize(cfg: BuildConfig, programs: dict[str, Any], samples, float_model=None) -> tuple[Any, Any, dict[str, Any]]:
    """Quantize the exported model: post-training (prepare_pt2e -> calibrate on `samples` ->
    convert_pt2e), through the submodule-aware path for a model with control flow, or by
    quantization-aware training on `samples` when quantization.qat is set. Then a static
    batch-1 export for lowering. Returns (quantized batch-1 ExportedProgram, the same with a
    dynamic batch for evaluation or None, info for the manifest)."""

    from . import quantize

    programs, changes = _rewritten(cfg, programs)
    sig = programs["static"].graph_signature
    flows = quantize.control_flow(programs["static"].graph_module, {**sig.inputs_to_parameters, **sig.inputs_to_buffers})
    if flows:
        _check_control_flow(cfg, flows)
        converted, info = _quantize_control_flow(cfg, programs["static"], samples, flows)
    elif cfg.quantization.qat is not None:
        converted, info = _quantize_aware_training(cfg, programs, samples, float_model)
    else:
        converted, info = _quantize_post_training(cfg, programs, samples)
    info["applied"] = quantize.applied_schemes(converted)
    info["rewrites"] = changes
    # A rewrite with nothing to do in this model is reported, not an error: a preset such
    # as lowering=fast names rewrites for whichever model a sweep builds.
    info["rewrites_unmatched"] = [n for n in cfg.lowering.rewrites if n not in {c["rewrite"] for c in changes}]
    for name in info["rewrites_unmatched"]:
        log.warning("lowering.rewrites: %s found nothing to rewrite in this model (recorded in the manifest)", name)
    quantized = export_program(converted, cfg.model.input_shape)
    # The same quantized model with its batch dimension kept, for evaluation in batches (a
    # call of the batch-1 program costs milliseconds, per sample).
    batched_program = _export_batched(converted, cfg.model.input_shape) if info["calibration"]["batched"] else None
    return quantized, batched_program, info


def _rewritten(cfg: BuildConfig, programs: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Both exports with lowering.rewrites applied (exported again), and the batch-1 one's
    changes for the manifest. A batch-dynamic program that cannot be exported again after
    the rewrites is dropped: calibration then runs sample by sample."""
    from . import rewrites

    shape = cfg.model.input_shape
    static, changes = rewrites.apply(programs["static"], cfg.lowering.rewrites, lambda m: export_program(m, shape))
    dynamic = programs["dynamic"]
    if dynamic is not None and changes:
        try:
            dynamic, _ = rewrites.apply(dynamic, cfg.lowering.rewrites, lambda m: export_program(m, shape, dynamic_batch=True))
        except Exception as exc:
            log.info("quantize: the rewritten model cannot keep a dynamic batch (%s)", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            dynamic = None
    return {"static": static, "dynamic": dynamic}, changes


def _quantize_post_training(cfg: BuildConfig, programs: dict[str, Any], samples) -> tuple[Any, dict[str, Any]]:
    """Calibrates in batches on the batch-dynamic program; if the quantizer's annotation
    passes left shape code that only holds for the traced batch (seen with mean()
    decompositions), a batch fails and calibration starts again, one sample at a time, on
    fresh observers of the static program."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    from . import quantize

    batched, reason = programs["dynamic"] is not None, None
    if batched:
        prepared = _prepare(cfg, programs["dynamic"])
        try:
            calls = quantize.calibrate(prepared, samples.x, cfg.calibration.batch_size, True)
        except Exception as exc:
            batched, reason = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.info("quantize: batched calibration failed (%s); calibrating one sample at a time", reason)
    else:
        reason = "the batch dimension could not be exported as dynamic"
    if not batched:
        prepared = _prepare(cfg, programs["static"])
        calls = quantize.calibrate(prepared, samples.x, 1, False)
    info = {"calibration": {
        "samples": len(samples), "batch_size": cfg.calibration.batch_size if batched else 1,
        "calls": calls, "batched": batched, "unbatched_reason": reason,
    }}
    return convert_pt2e(prepared), info


def _check_control_flow(cfg: BuildConfig, flows: list[dict[str, Any]]) -> None:
    first = flows[0]
    where = f"torch.{first['op']} (graph node {first['node']})"
    if not targets.supports_control_flow(cfg.target.accelerator):
        raise ConfigError(ConfigIssue("target.accelerator", (
            f"{cfg.target.accelerator!r} cannot run the model's {where}: only Ethos-U85's TOSA profile has the "
            "control-flow extension, and ExecuTorch 1.5.1 cannot leave control flow on the CPU for U55/U65; "
            f"accepted: {', '.join(t for t in TARGETS if targets.supports_control_flow(t))}, or a model without cond/while_loop")))
    if cfg.quantization.qat is not None:
        raise ConfigError(ConfigIssue("quantization.qat", (
            f"quantization-aware training of a model with control flow ({where}) is not supported; "
            "accepted: null (post-training quantization with one calibration sample per branch)")))


def _quantize_control_flow(cfg: BuildConfig, program, samples, flows: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """Every branch must see calibration samples: a branch with uncalibrated observers
    quantizes badly and silently, so one that no sample reaches is a config error naming it."""
    from . import quantize

    module = program.module(check_guards=False)
    coverage = quantize.branch_coverage(module, flows, samples.x)
    missed = [(f, b) for f in flows for b in f["branches"] if coverage[b["submodule"]] == 0]
    if missed:
        raise ConfigError([
            ConfigIssue("calibration", (
                f"the {b['role']} of torch.{f['op']} (graph node {f['node']}, submodule {b['submodule']}) is reached by none of "
                f"the {len(samples)} calibration samples, so its quantization ranges would be uncalibrated; accepted: a "
                "calibration set with at least one sample per branch (more samples, or another dataset)"))
            for f, b in missed
        ])
    captured = sorted({p for f in flows for p in f.get("captured_parameters", [])})
    if captured:
        # ExecuTorch 1.5.1's annotator gives every cond operand the first operand's
        # (activation) quantization, so weights a branch captures lose precision.
        log.warning("quantize: %d weight tensors are captured by a cond branch (%s); ExecuTorch 1.5.1 quantizes them at "
                    "the activation scale (see README, 'Control flow')", len(captured), ", ".join(captured[:4]))
    quantizer = quantize.make_quantizer(cfg.quantization, cfg.overrides, targets.compile_spec(cfg.target))
    converted = quantize.quantize_with_submodules(quantizer, module, samples.x)
    info = {
        "calibration": {
            "samples": len(samples), "batch_size": 1, "calls": len(samples), "batched": False,
            "unbatched_reason": "control flow: branch predicates hold per sample",
        },
        "control_flow": {"ops": flows, "samples_per_branch": coverage, "captured_parameters": captured},
    }
    return converted, info


def _quantize_aware_training(cfg: BuildConfig, programs: dict[str, Any], samples, float_model) -> tuple[Any, dict[str, Any]]:
    """Fold BatchNorm -> prepare_qat_pt2e -> quantize.train on `samples` (the qat dataset) ->
    convert_pt2e. Trains in batches on the batch-dynamic program when there is one."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from . import quantize

    qat = cfg.quantization.qat
    batched = programs["dynamic"] is not None
    program = programs["dynamic" if batched else "static"]
    quantizer = quantize.make_quantizer(cfg.quantization, cfg.overrides, targets.compile_spec(cfg.target))
    module = program.module(check_guards=False)
    quantize.fold_batchnorm(module)
    prepared = prepare_qat_pt2e(module, quantizer)
    trained = quantize.train(prepared, float_model, samples, qat, batched)
    info = {
        "calibration": {
            "samples": 0, "batch_size": trained["batch_size"], "calls": 0, "batched": batched,
            "unbatched_reason": None if batched else "the batch dimension could not be exported as dynamic",
            "note": "quantization-aware training: the ranges come from training, not from the calibration set",
        },
        "qat": trained,
    }
    return convert_pt2e(prepared), info


def _export_batched(module, input_shape: list[int]):
    try:
        return export_program(module, input_shape, dynamic_batch=True)
    except Exception as exc:  # evaluation then runs the batch-1 program sample by sample
        log.info("quantize: no batched program for evaluation (%s)", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None


# --- lower + package ----------------------------------------------------------------------------


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


def delegation_report(graph_module, reasons: dict[str, str]) -> dict[str, Any]:
    """Which ops the partitioner delegated (NPU) and which stay on the CPU, with the
    partitioner's reason where it gave one."""
    from . import quantize

    partitions, cpu_ops = 0, []
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if name == "executorch_call_delegate":
            partitions += 1
        elif name != "getitem":
            cpu_ops.append({"op": name, "node": node.name, "module": quantize.module_path(node), "reason": reasons.get(node.name)})
    delegated_nodes = [
        n for _, sub in graph_module.named_children() if hasattr(sub, "original_module")
        for n in sub.original_module.graph.nodes if n.op == "call_function"
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
        "npu_partitions": partitions, "npu_ops": delegated, "control_flow": control_flow, "cpu_op_count": len(cpu_ops),
        "cpu_compute_op_count": len(compute), "cpu_op_counts": counts, "cpu_ops": cpu_ops,
    }


def runtime_contract(edge_program, quantized, delegation: dict[str, Any]) -> dict[str, Any]:
    """What the firmware must provide: CPU kernels, and the program's inputs and outputs with
    the quantization applied at the boundary (the NPU scratch size is in the Vela metrics)."""
    from .evaluate import boundary_qparams

    def tensors(nodes):
        entries = []
        for n in nodes:
            val = n.meta["val"]
            entry = {"shape": list(val.shape), "dtype": str(val.dtype).replace("torch.", "")}
            if val.dim() == 4:  # the memory layout the firmware must use for this tensor
                entry["layout"] = {(0, 1, 2, 3): "NCHW", (0, 2, 3, 1): "NHWC"}.get(tuple(val.dim_order()), str(val.dim_order()))
            entries.append(entry)
        return entries

    graph = edge_program.graph_module.graph
    user_inputs = set(edge_program.graph_signature.user_inputs)
    inputs = tensors([n for n in graph.nodes if n.op == "placeholder" and n.name in user_inputs])
    outputs = tensors([a for a in next(n for n in graph.nodes if n.op == "output").args[0] if hasattr(a, "meta")])
    q_in, dq_out = boundary_qparams(quantized)
    for entries, q in ((inputs, q_in), (outputs, dq_out)):
        if q is not None and len(entries) == 1:
            entries[0]["quantization"] = {"scale": q[0], "zero_point": q[1], "dtype": str(q[2]).replace("torch.", "")}
    return {"cpu_kernels": sorted(delegation["cpu_op_counts"]), "inputs": inputs, "outputs": outputs}


def channels_last(program, input_shape: list[int]):
    """The program exported again with a channels-last example input: its input then has
    dim order (0, 2, 3, 1), which ExecuTorch's Arm backend passes to the NPU as NHWC with no
    transpose, and the layout propagates to the outputs it reaches. Same ops, same values."""
    import torch

    example = torch.zeros(input_shape).to(memory_format=torch.channels_last)
    return torch.export.export(program.module(check_guards=False), (example,))


def run_lower(
    cfg: BuildConfig, quantized, inspect: Optional[Callable[[Any, dict[str, bytes]], None]] = None, run_vela: bool = False,
) -> tuple[bytes, dict[str, Any], str, dict[str, bytes]]:
    """EthosUPartitioner -> TOSA -> .pte bytes, with a placeholder payload per NPU partition
    (run_vela=False, the shared lowering that run_vela() completes per target), or with Vela
    run in place for cfg.target (run_vela=True, the fallback for programs that cannot be
    retargeted).

    `inspect(edge_program, tosa_by_payload)`, if given, sees the partitioned program before
    the CPU-side passes and serialization change it (the TOSA check runs there). Returns
    (pte, info, Vela's console text, files): files are each partition's TOSA flatbuffer as
    `part<i>.tosa` and, with run_vela, Vela's CSVs (see vela.collect). A graph the
    partitioner or Vela rejects raises BuildError naming the configuration."""
    import tempfile

    from executorch.backends.arm.ethosu import EthosUPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    from . import pte, vela

    t = cfg.target
    console = io.StringIO()
    info: dict[str, Any] = {}
    if cfg.lowering.io_layout == "nhwc":
        quantized = channels_last(quantized, cfg.model.input_shape)
    try:
        # Vela prints its report to stdout; keep it for the job log instead of the terminal.
        # The lowering passes warn about torch APIs they use; those are not the user's concern.
        with contextlib.redirect_stdout(console), warnings.catch_warnings(), \
                tempfile.TemporaryDirectory(prefix="ethosu-lower-") as workdir, \
                vela.capture(Path(workdir) / "vela", run_vela) as partitions, _partitioner_reasons() as reasons:
            warnings.simplefilter("ignore", FutureWarning)
            edge = to_edge_transform_and_lower(
                quantized,
                partitioner=[EthosUPartitioner(targets.compile_spec(t))],
                compile_config=EdgeCompileConfig(_check_ir_validity=False),
            )
            if inspect is not None:
                inspect(edge.exported_program(), {p.processed_sha256: (p.folder / vela.TOSA_FILE).read_bytes() for p in partitions})
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
                info["vela"] = vela.collect(partitions, reports)
            else:
                reports.mkdir()
                for p in partitions:
                    shutil.copyfile(p.folder / vela.TOSA_FILE, reports / f"part{p.index}.tosa")
                info["partitions"] = len(partitions)
                info["retargetable"] = pte.round_trips(program.buffer)
            files = {f.name: f.read_bytes() for f in sorted(reports.iterdir())}
    except (ConfigError, BuildError):
        raise
    except SystemExit as exc:
        raise _vela_exited(cfg, exc, console.getvalue()) from exc
    except Exception as exc:
        raise _lowering_failed(cfg, exc) from exc
    return program.buffer, info, console.getvalue(), files


def thread_lock_for_tqdm() -> None:
    """Call before any stage runs. torch.fx's Interpreter opens a (disabled) tqdm bar during
    constant folding (torchao's and ExecuTorch's), and tqdm's first bar creates a
    multiprocessing lock: a named semaphore, which a sweep worker stopped at the end of a
    sweep (sweep.py) never releases and the resource tracker then reports as leaked. Bars
    are never shared between processes here, so a thread lock serves."""
    import threading

    try:
        import tqdm
    except ImportError:  # then nothing creates that lock either
        return
    if "_lock" not in vars(tqdm.tqdm):
        tqdm.tqdm.set_lock(threading.RLock())


def run_vela(cfg: BuildConfig, template: bytes, tosa: list[bytes]) -> tuple[bytes, dict[str, Any], str, dict[str, bytes]]:
    """Vela on each partition of the shared lowering (its template.pte and one TOSA
    flatbuffer per partition, from run_lower) for cfg.target, filled into the program
    (pte.retarget). Returns (pte, Vela metrics, console, files: Vela's CSVs and the TOSA
    flatbuffers, see vela.collect)."""
    import tempfile

    from . import pte, vela

    spec = targets.compile_spec(cfg.target)
    console = io.StringIO()
    try:
        # Vela reports on stdout and, through argparse, its refusals on stderr: both go to the log.
        with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console), \
                tempfile.TemporaryDirectory(prefix="ethosu-vela-") as workdir:
            parts, payloads = [], {}
            for i, flatbuffer in enumerate(tosa):
                part = vela.Partition(i, Path(workdir) / f"part{i}")
                payloads[vela.placeholder(flatbuffer)] = vela.compile_partition(flatbuffer, spec.compiler_flags, part)
                parts.append(part)
            program = pte.retarget(template, payloads, spec._to_list())
            reports = Path(workdir) / "reports"
            metrics = vela.collect(parts, reports)
            files = {f.name: f.read_bytes() for f in sorted(reports.iterdir())}
    except pte.RetargetError:
        raise
    except SystemExit as exc:
        raise _vela_exited(cfg, exc, console.getvalue()) from exc
    except Exception as exc:
        raise _lowering_failed(cfg, exc) from exc
    return program, metrics, console.getvalue(), files


def _vela_exited(cfg: BuildConfig, exc: SystemExit, console: str) -> BuildError:
    """Vela ends with sys.exit on a command line it rejects. Flags are validated before any
    stage (validate.py), so this is a flag combination only Vela itself judges."""
    said = next((line for line in reversed(console.splitlines()) if line.strip()), "")
    return BuildError(f"Vela exited (status {exc.code!r}) for target {cfg.target.accelerator} with flags "
                      f"{targets.vela_flags(cfg.target)} (target.vela_flags){': ' + said if said else ''}")


def _lowering_failed(cfg: BuildConfig, exc: BaseException) -> BuildError:
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


def run_evaluate(cfg: BuildConfig, model, quantized, samples, batched=None) -> dict[str, Any]:
    from . import evaluate

    return {"accuracy": evaluate.compare(model, quantized, samples, batched)}
