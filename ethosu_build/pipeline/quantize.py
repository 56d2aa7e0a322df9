"""Stage `quantize`: the exported float model -> the quantized model, by one of three paths.

- post-training (prepare_pt2e -> calibrate -> convert_pt2e), in batches on the
  batch-dynamic export where it can;
- a model with control flow: the quantizer's submodule-aware path (control_flow.py);
- quantization-aware training when quantization.qat is set (qat.py).

The quantizer is built here, once, from the scheme and the overrides (quantizer.py). Before
it: the overrides must each select an operator of the exported graph, and
lowering.rewrites edit the float graph (rewrites.py). After it: a static batch-1 export for
lowering, and a batch-dynamic one for evaluation in batches.

torchao is imported inside functions: pipeline/build.py imports this module on the up-to-date
path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import data
from ..config import targets
from ..config.schema import BuildConfig
from ..errors import first_line
from ..files import markdown_table
from ..store.cache import Entry
from . import control_flow, qat, quantizer, rewrites
from .export import Export, Exported, batch_dynamic, export_program, load_program, printed_to_log, program_bytes
from .model_checks import check_override_matches
from .stage import Run, Stage, dataset_key

log = logging.getLogger("ethosu_build.build")


@dataclass
class Quantized:
    program: Any  # the quantized batch-1 ExportedProgram, which is lowered
    batched: Any | None  # the same with a dynamic batch, for evaluation in batches; or None
    info: dict[str, Any]  # calibration / QAT / control flow / rewrites / overrides, for the manifest

    def save(self, folder: Path) -> None:
        (folder / "program.pt2").write_bytes(program_bytes(self.program))
        if self.batched is not None:
            (folder / "batched.pt2").write_bytes(program_bytes(self.batched))
        (folder / "info.json").write_text(json.dumps(self.info, indent=1, sort_keys=True))

    @classmethod
    def load(cls, entry: Entry) -> Quantized:
        batched = load_program(entry.read("batched.pt2")) if entry.has("batched.pt2") else None
        return cls(load_program(entry.read("program.pt2")), batched, entry.read_json("info.json"))


class Quantize(Stage[Quantized]):
    name = "quantize"
    version = 7  # 7: the batched path binds symbolic sizes, and falls back on any failure (issue 32)
    result = Quantized
    write_behind = True  # programs take 0.2-0.6 s each to serialize

    @classmethod
    def key_inputs(cls, cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
        quantization = dataclasses.asdict(cfg.quantization)
        qat = quantization.pop("qat")
        # The observer keys the stage only where it is not EthosUQuantizer's own (histogram),
        # so builds from before the key existed keep their cache entries.
        if quantization["observer"] == "histogram":
            del quantization["observer"]
        overrides = [dataclasses.asdict(e) for e in cfg.overrides.values()]
        for entry in overrides:
            if entry["observer"] is None:
                del entry["observer"]
        inputs = {
            "export": keys["export"],
            # The quantizer's passes depend on the target only through its TOSA specification,
            # so targets that share one share the calibrated model.
            "tosa_spec": targets.tosa_spec_string(cfg.target.accelerator),
            "quantization": quantization,
            "rewrites": cfg.lowering.rewrites,  # applied to the float graph before the quantizer sees it
            # Order matters (a later override wins); the entries' names do not.
            "overrides": overrides,
        }
        if qat is not None:  # the ranges come from training, not from the calibration set
            return {**inputs, "qat": {**qat, "data": data.fingerprint(qat["dataset"])}}
        return {**inputs, "calibration": dataset_key(cfg.calibration, batch_size=True)}

    @classmethod
    def manifest(cls, run: Run) -> dict[str, Any]:
        cfg = run.cfg
        # The quantize stage's info, carried by the lowering (cached or not): the quantized
        # program itself is not loaded when the lowering comes from the cache.
        quant = run.fetched("lower").quant_info
        return {
            "quantization": {
                "scheme": cfg.quantization.scheme,
                "per_channel": cfg.quantization.per_channel,
                "io": cfg.quantization.io,
                "observer": cfg.quantization.observer if cfg.quantization.qat is None else None,
                "overrides": [
                    {
                        "name": n,
                        "selector": e.describe(),
                        "scheme": e.scheme,
                        "observer": e.observer,
                        "ops_selected": quant.get("override_matches", {}).get(n),
                    }
                    for n, e in cfg.overrides.items()
                ],
                "applied": quant["applied"],
                "calibration": quant["calibration"],
                # Quantization-aware training: what the training loop did (null: post-training).
                "qat": quant.get("qat"),
                # cond / while_loop: each op's branches and how many calibration samples reached them.
                "control_flow": quant.get("control_flow"),
            }
        }

    @staticmethod
    def report(m: dict[str, Any], vela_dir: Path) -> list[str]:
        q = m["quantization"]
        return _qat_section(q.get("qat")) + _control_flow_section(q.get("control_flow")) + _overrides_section(q)

    @classmethod
    def inputs(cls, run: Run) -> tuple:
        # The ranges come from the calibration set, or from QAT's own training set.
        return run.get(Export), run.samples("calibration" if run.cfg.quantization.qat is None else "quantization.qat")

    @classmethod
    def compute(cls, run: Run, exported: Exported, samples) -> Quantized:
        cfg = run.cfg
        matches = quantizer.override_matches(exported.static.graph_module, cfg.overrides)
        check_override_matches(matches, cfg)
        programs, changes = _rewritten(cfg, exported)
        sig = programs["static"].graph_signature
        flows = control_flow.control_flow(
            programs["static"].graph_module, {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
        )
        if flows:
            control_flow.check(cfg, flows)
        q = quantizer.build_quantizer(cfg)
        specs = cfg.model.input_specs()
        if flows or cfg.quantization.qat is not None:
            if flows:
                converted, info = control_flow.quantize(q, programs["static"], samples, flows)
            else:
                converted, info = qat.quantize(q, programs, samples, run.model(), cfg.quantization.qat)
            info["applied"] = quantizer.applied_schemes(converted)  # before re-export drops the annotations
            program = export_program(converted, specs)
            batched = _evaluation_program(converted, specs, samples) if info["calibration"]["batched"] else None
        else:
            converted, program, batched, info = _post_training(cfg, q, programs, samples)
        which = "calibration" if cfg.quantization.qat is None else "quantization.qat"
        info["data"] = {"source": which, **data.summary(samples, cfg.model.input_specs())}  # what ranges fit
        info["first_layer"] = first_layer(exported.static)
        info["override_matches"] = matches
        info["rewrites"] = changes
        # A rewrite with nothing to do in this model is reported, not an error: a preset such
        # as lowering=fast names rewrites for whichever model a sweep builds.
        info["rewrites_unmatched"] = [n for n in cfg.lowering.rewrites if n not in {c["rewrite"] for c in changes}]
        for name in info["rewrites_unmatched"]:
            log.warning("lowering.rewrites: %s found nothing to rewrite in this model (recorded in the manifest)", name)
        return Quantized(program, batched, info)


# Float ops that take the input as their first argument and could absorb an affine
# preprocessing step (a * x + b per channel) into their weights and bias.
_ABSORBING = {"conv2d": "aten.conv2d", "convolution": "aten.convolution", "linear": "aten.linear"}


def first_layer(program) -> dict[str, Any] | None:
    """The op that consumes the first user input, when it is that input's only consumer:
    {op, node, padding} (padding: it zero-pads its input, which an absorbed normalization
    would turn into padding with another value). None if the input feeds several ops."""
    sig = program.graph_signature
    graph = program.graph_module.graph
    placeholder = next((n for n in graph.nodes if n.op == "placeholder" and n.name in sig.user_inputs), None)
    if placeholder is None or len(placeholder.users) != 1:
        return None
    (user,) = placeholder.users
    if user.op != "call_function" or user.args[0] is not placeholder:
        return None
    target = str(user.target)
    op = next((name for name, prefix in _ABSORBING.items() if target.startswith(prefix + ".")), None)
    if op is None:
        return {"op": target, "node": user.name, "absorbs": False, "padding": False}
    padding = False
    if op != "linear":
        pad = user.args[4] if len(user.args) > 4 else user.kwargs.get("padding", 0)
        padding = pad not in (0, "valid") and (not isinstance(pad, (list, tuple)) or any(p != 0 for p in pad))
    return {"op": op, "node": user.name, "absorbs": True, "padding": bool(padding)}


def _rewritten(cfg: BuildConfig, exported: Exported) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Both exports with lowering.rewrites applied (exported again), and the batch-1 one's
    changes for the manifest. A batch-dynamic program that cannot be exported again after
    the rewrites is dropped: calibration then runs sample by sample."""
    specs = cfg.model.input_specs()
    static, changes = rewrites.apply(exported.static, cfg.lowering.rewrites, lambda m: export_program(m, specs))
    dynamic = exported.dynamic
    why = exported.dynamic_reason or (None if dynamic else "the batch dimension could not be exported as dynamic")
    if dynamic is not None and changes:
        try:
            with printed_to_log("quantize: the rewrites of the batch-dynamic program"):
                dynamic, _ = rewrites.apply(
                    dynamic, cfg.lowering.rewrites, lambda m: export_program(m, specs, dynamic_batch=True)
                )
        except Exception as exc:
            why = f"the rewritten model cannot keep a dynamic batch ({type(exc).__name__}: {first_line(exc)})"
            log.info("quantize: %s; calibrating one sample at a time", why)
            log.debug("quantize: the rewrites of the batch-dynamic program failed", exc_info=True)
            dynamic = None
    return {"static": static, "dynamic": dynamic, "unbatched_reason": why}, changes


def _post_training(cfg: BuildConfig, q, programs: dict[str, Any], samples) -> tuple[Any, Any, Any, dict[str, Any]]:
    """prepare_pt2e -> calibrate -> convert_pt2e, in batches on the batch-dynamic program
    where it can: (the converted module, its batch-1 program, its batch-dynamic program for
    the evaluation or None, info for the manifest).

    If anything on the batched path fails (preparing the batch-dynamic program, a batch, the
    conversion, or the batch-1 export of its result), calibration starts again one sample at
    a time on fresh observers of the static program: the path ExecuTorch's aot_arm_compiler
    takes, which the batched one only speeds up. One log line says why, the manifest keeps
    it (calibration.unbatched_reason), and whatever torch printed on the way, the failure's
    traceback too, goes to the build log only."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    specs, reason = cfg.model.input_specs(), programs["unbatched_reason"]
    if programs["dynamic"] is not None:
        step = "preparing the batch-dynamic program"
        try:
            with printed_to_log(f"quantize: {step}"):
                prepared = quantizer.prepare(q, _module(programs["dynamic"]), batched=True)
            step = "calibrating in batches"
            calls = quantizer.calibrate(prepared, samples, cfg.calibration.batch_size, True)
            step = "converting the batch-calibrated model"
            with printed_to_log(f"quantize: {step}"):
                converted = convert_pt2e(prepared)
                applied = quantizer.applied_schemes(converted)  # before re-export drops the annotations
                program = export_program(converted, specs)
            batched = _evaluation_program(converted, specs, samples)
            return converted, program, batched, _calibration_info(cfg, samples, calls, None, applied)
        except Exception as exc:
            reason = f"{step} failed ({type(exc).__name__}: {first_line(exc)})"
            log.info("quantize: %s; calibrating one sample at a time on the batch-1 program", reason)
            log.debug("quantize: %s failed", step, exc_info=True)
    prepared = quantizer.prepare(q, _module(programs["static"]), batched=False)
    calls = quantizer.calibrate(prepared, samples, 1, False)
    converted = convert_pt2e(prepared)
    applied = quantizer.applied_schemes(converted)
    program = export_program(converted, specs)
    return converted, program, None, _calibration_info(cfg, samples, calls, reason, applied)


def _module(program):
    # torch 2.13 inserts a guards node in .module() that the Arm quantizer passes reject.
    return program.module(check_guards=False)


def _calibration_info(cfg: BuildConfig, samples, calls: int, reason: str | None, applied) -> dict[str, Any]:
    batched = reason is None
    return {
        "calibration": {
            "samples": len(samples),
            "batch_size": cfg.calibration.batch_size if batched else 1,
            "calls": calls,
            "batched": batched,
            "unbatched_reason": reason,
        },
        "applied": applied,
    }


def _evaluation_program(converted, specs: list, samples) -> Any | None:
    """The quantized model with its batch dimension kept, for evaluation in batches (a call
    of the batch-1 program costs milliseconds, per sample), or None. Exported here, once:
    exported lazily, each child that needs it (storing, comparing) would export it again,
    more work in all for a sweep that keeps both cores busy. Tried on a batch of 3 (neither
    the batch 1 lowered nor the batch 2 traced): a program that cannot run at another batch
    is not kept, and the evaluation runs sample by sample."""
    import torch

    what = "quantize (evaluation program)"
    program = batch_dynamic(converted, specs, what)
    if program is None:
        return None
    trial = tuple(torch.cat([x[:1]] * 3) for x in samples.x)
    try:
        with torch.no_grad(), printed_to_log(what):
            quantizer.call(program.module(), *trial)
    except Exception as exc:
        why = f"{type(exc).__name__}: {first_line(exc)}"
        log.info("%s: it fails at batch 3 (%s); evaluating one sample at a time", what, why)
        log.debug("%s: the trial at batch 3 failed", what, exc_info=True)
        return None
    return program


# --- the quantized program's boundary (the lowering's runtime contract, the evaluation) ---


def io_qparams(program) -> tuple[list[tuple | None], list[tuple | None]]:
    """Per user input, (scale, zero_point, dtype) of the quantize right after it, and per
    output, of the dequantize right before it; None where the graph has no such node (an
    integer input, a float output)."""
    graph = program.graph_module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    q_in = [next((u for u in p.users if "quantize_per_tensor" in str(u.target)), None) for p in placeholders]
    outs = next(n for n in graph.nodes if n.op == "output").args[0]
    dq_out = [o if "dequantize_per_tensor" in str(getattr(o, "target", "")) else None for o in outs]

    def params(node):
        return None if node is None else (float(node.args[1]), int(node.args[2]), node.args[5])

    return [params(n) for n in q_in], [params(n) for n in dq_out]


def boundary_qparams(program) -> tuple[tuple | None, tuple | None]:
    """io_qparams of the first input and the first output."""
    q_in, dq_out = io_qparams(program)
    return (q_in[0] if q_in else None), (dq_out[0] if dq_out else None)


# --- its sections of report.md ----------------------------------------------------------


def _qat_section(qat: dict[str, Any] | None) -> list[str]:
    if not qat:
        return []
    columns = ["samples", "epochs", "batch_size", "optimizer", "lr", "loss", "loss_first_epoch", "loss_last_epoch"]
    header = ["samples", "epochs", "batch", "optimizer", "lr", "loss", "loss, first epoch", "loss, last epoch"]
    return ["", "## Quantization-aware training", "", markdown_table(header, [[qat[c] for c in columns]])]


def _control_flow_section(flow: dict[str, Any] | None) -> list[str]:
    if not flow:
        return []
    out = ["", "## Control flow", "", "Where it runs: see Delegation.", ""]
    out.append(
        markdown_table(
            ["op", "node", "branch", "submodule", "calibration samples reaching it"],
            [
                [f["op"], f["node"], b["role"], b["submodule"], flow["samples_per_branch"].get(b["submodule"])]
                for f in flow["ops"]
                for b in f["branches"]
            ],
        )
    )
    if flow.get("captured_parameters"):
        out.append(
            f"\nWeights captured by a cond branch ({', '.join(flow['captured_parameters'])}) are quantized at the "
            'activation scale by ExecuTorch 1.5.1 (docs/quantization.md, "Control flow").'
        )
    return out


def _overrides_section(q: dict[str, Any]) -> list[str]:
    if not q["overrides"]:
        return []
    return [
        "",
        "## Overrides (in order; a later one wins)",
        "",
        markdown_table(
            ["name", "selector", "scheme", "ops selected"],
            [[o["name"], o["selector"], o["scheme"], o["ops_selected"]] for o in q["overrides"]],
        ),
    ]
