"""Stage `evaluate`: numbers that say whether a build can be trusted, measured on the host
(no NPU here). Key: the lowering and the evaluation settings, not Vela (keys.py).

- `compare()`: float model vs the PT2E quantized model on the evaluation samples: top-1 where
  labels exist, and always output SQNR, cosine similarity and max abs error.
- `tosa_check()`: the exact TOSA flatbuffer Vela consumed, run on the TOSA reference model
  (tosa-tools), against the PT2E quantized model in the integer domain.

torch and the TOSA reference model are imported inside functions: pipeline/build.py imports
this module on the up-to-date path.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import background, data, numerics
from ..config.schema import BuildConfig
from ..data import preprocess
from ..errors import EthosuError, first_line
from ..files import markdown_table
from ..store.cache import Entry, KeyLock
from .lower import Lower, run_lower
from .quantize import Quantize, Quantized, boundary_qparams
from .stage import Run, Stage, dataset_key

log = logging.getLogger("ethosu_build.build")


def _outputs(fn, samples, batch: int = 1):
    import torch

    with torch.no_grad():
        return torch.cat([fn(*chunk).reshape(len(chunk[0]), -1) for chunk in samples.chunks(batch)])


def error_metrics(reference, test) -> dict[str, float]:
    """SQNR (dB), cosine similarity and max abs error of `test` against `reference`."""
    import torch

    ref, out = reference.double().flatten(), test.double().flatten()
    noise = torch.sum((ref - out) ** 2).item()
    signal = torch.sum(ref**2).item()
    sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    cos = torch.nn.functional.cosine_similarity(ref, out, dim=0).item()
    return {"sqnr_db": round(sqnr, 3), "cosine": round(cos, 6), "max_abs_error": float((ref - out).abs().max())}


def _top1(logits, labels) -> float | None:
    if labels is None or logits.shape[1] < 2:
        return None
    return round(100.0 * (logits.argmax(1) == labels).double().mean().item(), 3)


def compare(float_model, quantized_program, samples, batched_program=None, batch: int = 32) -> dict[str, Any]:
    """Float vs PT2E quantized outputs on the same samples (accuracy in percent). The
    quantized model runs in batches when `batched_program` (its batch-dynamic export) is
    given, else sample by sample on the batch-1 program."""
    try:
        float_out = _outputs(float_model, samples, batch=batch)
    except Exception:  # a model written for batch 1 only (e.g. reshape(1, -1))
        float_out = _outputs(float_model, samples)
    if batched_program is not None:
        quant_out = _outputs(batched_program.module(), samples, batch=batch)
    else:
        quant_out = _outputs(quantized_program.module(), samples)
    result: dict[str, Any] = {"samples": len(samples), **error_metrics(float_out, quant_out)}
    f1, q1 = _top1(float_out, samples.y), _top1(quant_out, samples.y)
    result.update({"float_top1": f1, "quantized_top1": q1, "accuracy_drop": None if f1 is None else round(f1 - q1, 3)})
    return result


def _inverse(perm: tuple[int, ...]) -> list[int]:
    inverse = [0] * len(perm)
    for i, axis in enumerate(perm):
        inverse[axis] = i
    return inverse


@contextlib.contextmanager
def _quiet_stderr():
    """The reference model prints a TOSA version warning from native code, below Python's
    sys.stdout/sys.stderr; keep it off the user's terminal for the duration of a run."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(os.devnull, "w") as null:
            for fd in saved:
                os.dup2(null.fileno(), fd)
            yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def tosa_check(edge_program, tosa_by_payload: dict[str, bytes], quantized_program, samples, num: int) -> dict[str, Any]:
    """Run the lowered program as deployed, with every NPU partition executed by the TOSA
    reference model on the exact flatbuffer Vela compiled and the CPU ops in PyTorch, and
    compare its outputs with the PT2E quantized model: max difference in output LSBs (of the
    output's quantization scale) and top-1 agreement, over `num` samples."""
    import hashlib

    import numpy as np
    import torch
    import tosa_reference_model as reference

    failures: list[str] = []

    def physical(tensor, node):
        """The tensor in its memory layout (dim order), as the runtime hands it over."""
        val = node.meta.get("val") if hasattr(node, "meta") else None
        return (tensor.permute(tuple(val.dim_order())) if val is not None else tensor).contiguous().numpy()

    def logical(array, val):
        """A partition's output back in logical (NCHW) order, from its memory layout."""
        tensor = torch.from_numpy(np.asarray(array).copy())
        return tensor.permute(_inverse(tuple(val.dim_order()))) if val is not None else tensor

    class DeployedInterpreter(torch.fx.Interpreter):
        def run_node(self, n):
            if n.op != "call_function" or "executorch_call_delegate" not in str(
                getattr(n.target, "__name__", n.target)
            ):
                return super().run_node(n)
            args, _ = self.fetch_args_kwargs_from_env(n)
            graph = tosa_by_payload[hashlib.sha256(args[0].processed_bytes).hexdigest()]
            # A partition reads and writes channels-last tensors (lowering.io_layout=nhwc) as
            # NHWC in memory; the rest of the graph works in logical order.
            with _quiet_stderr():
                outputs, status = reference.run(graph, [physical(a, node) for a, node in zip(args[1:], n.args[1:])])
            if str(status) != "GraphStatus.TOSA_VALID":
                failures.append(str(status))
            vals = n.meta.get("val")
            vals = vals if isinstance(vals, (tuple, list)) else [None] * len(outputs)
            return tuple(logical(o, v) for o, v in zip(outputs, vals))

    sig = edge_program.graph_signature
    state = {**edge_program.state_dict, **edge_program.constants}
    interpreter = DeployedInterpreter(edge_program.graph_module)
    module = quantized_program.module()
    _, dq_out = boundary_qparams(quantized_program)
    scale = dq_out[0] if dq_out is not None else None
    max_diff, agree, n = 0.0, 0, min(num, len(samples))
    outputs: list[list[Any]] = []
    for i in range(n):
        x = iter(samples.select(slice(i, i + 1)))  # the user inputs, in the signature's order
        args = [next(x) if spec.kind.name == "USER_INPUT" else state[spec.target] for spec in sig.input_specs]
        deployed = interpreter.run(*args)
        deployed = list(deployed) if isinstance(deployed, (tuple, list)) else [deployed]
        outputs.append([o.detach().numpy() for o in deployed])
        deployed = deployed[0]
        with torch.no_grad():
            expected = module(*samples.select(slice(i, i + 1)))
        if failures:
            return {"status": "failed", "reason": f"reference model status {failures[0]}"}, None
        diff = (deployed.double().flatten() - expected.double().flatten()).abs().max().item()
        max_diff = max(max_diff, diff)
        agree += int(deployed.flatten().argmax() == expected.flatten().argmax())
    result: dict[str, Any] = {
        "status": "done",
        "samples": n,
        "max_abs_diff": max_diff,
        "top1_agreement": round(100.0 * agree / n, 3),
    }
    result["max_lsb_diff"] = None if scale is None else int(round(max_diff / scale))
    # What the program as deployed computed, on which inputs: for `ethosu-artifacts diff`
    # and the firmware's self-test vectors.
    arrays = {f"input_{k}": x[:n].numpy() for k, x in enumerate(samples.x)}
    arrays.update(
        {f"output_{k}": np.concatenate([o[k] for o in outputs]) for k in range(len(outputs[0]))} if outputs else {}
    )
    return result, arrays


def npz_bytes(arrays: dict[str, Any]) -> bytes:
    """An .npz of `arrays` with fixed timestamps: the same arrays give the same bytes."""
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            one = io.BytesIO()
            np.save(one, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            z.writestr(
                zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), one.getvalue(), zipfile.ZIP_DEFLATED
            )
    return buf.getvalue()


# --- the stage ---------------------------------------------------------------------------------


@dataclass
class Evaluated:
    accuracy: dict[str, Any]
    tosa_check: dict[str, Any]
    tosa_io: bytes | None = None  # npz: the TOSA check's inputs and the deployed program's outputs
    data: dict[str, Any] | None = None  # the evaluation samples (data.summary)

    def save(self, folder: Path) -> None:
        info = {"accuracy": self.accuracy, "tosa_check": self.tosa_check, "data": self.data}
        (folder / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        if self.tosa_io is not None:
            (folder / "tosa_io.npz").write_bytes(self.tosa_io)

    @classmethod
    def load(cls, entry: Entry) -> Evaluated:
        info = entry.read_json("info.json")
        tosa_io = entry.read("tosa_io.npz") if entry.has("tosa_io.npz") else None
        return cls(info["accuracy"], info["tosa_check"], tosa_io, info.get("data"))


class TosaCheck:
    """Called by the lowering with the partitioned program (Run.inspect_lowering): runs
    tosa_check on it. A check that cannot run is a finding, not a failed build. The rest of
    the lowering does not wait for it: where it can, a child runs it (background.py)."""

    def __init__(self, run: Run):
        self.run = run
        self._outcome: tuple[dict[str, Any], bytes | None] | None = None
        self._child: background.Child | None = None

    def __call__(self, edge_program, tosa_by_payload: dict[str, bytes]) -> None:
        if not background.possible():
            self._outcome = self._check(edge_program, tosa_by_payload)
            return

        def in_child() -> dict[str, Any]:
            result, npz = self._check(edge_program, tosa_by_payload)
            return {"result": result, "npz": None if npz is None else base64.b64encode(npz).decode()}

        self._child = background.Child("checking on the TOSA reference model", in_child, close_fds=KeyLock.held)
        self.run.children.append(self._child)

    def _check(self, edge_program, tosa_by_payload: dict[str, bytes]) -> tuple[dict[str, Any], bytes | None]:
        run = self.run
        try:
            with numerics.numeric_stage():  # in a child too: the stage's numeric platform
                result, arrays = tosa_check(
                    edge_program,
                    tosa_by_payload,
                    run.get(Quantize).program,
                    run.samples("evaluation"),
                    run.cfg.evaluation.tosa_samples,
                )
            return result, (npz_bytes(arrays) if arrays else None)
        except EthosuError:
            raise
        except Exception as exc:
            log.debug("TOSA check failed", exc_info=True)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {first_line(exc)}"}, None

    def outcome(self) -> tuple[dict[str, Any], bytes | None] | None:
        """(result, the npz of its inputs and outputs) once the check ran, waiting for its
        child; None if no lowering ran it."""
        if self._child is not None:
            child, self._child = self._child, None
            self.run.children.remove(child)
            try:
                said = child.result()
            except background.ChildFailed as exc:
                exc.reraise()
            self._outcome = (said["result"], None if said["npz"] is None else base64.b64decode(said["npz"]))
        return self._outcome


class Evaluate(Stage[Evaluated]):
    """Float vs quantized metrics and the TOSA check. The TOSA check needs the partitioned
    program, which exists only while lowering: it sees the lowering run for this build, or,
    if the lowering came from the cache, one run again in memory."""

    name = "evaluate"
    version = 6  # 6: its result summarizes the samples it saw (data.summary)
    result = Evaluated

    @classmethod
    def key_inputs(cls, cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
        # Accuracy needs the quantized model, the TOSA check the lowered partitions: not Vela.
        return {
            "lower": keys["lower"],
            "evaluation": dataset_key(cfg.evaluation, batch_size=False),
            "tosa_check": cfg.evaluation.tosa_check,
            "tosa_samples": cfg.evaluation.tosa_samples,
        }

    @classmethod
    def manifest(cls, run: Run) -> dict[str, Any]:
        evaluated = run.get(Evaluate)
        return {
            "metrics": {"accuracy": evaluated.accuracy, "tosa_check": evaluated.tosa_check},
            "data": data_section(run.cfg, run.fetched("lower").quant_info, evaluated.data),
        }

    @classmethod
    def files(cls, run: Run) -> dict[str, bytes]:
        tosa_io = run.get(Evaluate).tosa_io  # the TOSA check's inputs and the deployed outputs (pipeline/diff.py)
        return {} if tosa_io is None else {"check/tosa_io.npz": tosa_io}

    @staticmethod
    def report(m: dict[str, Any], vela_dir: Path) -> list[str]:
        metrics = m.get("metrics", {})
        return (
            _accuracy_section(metrics.get("accuracy"))
            + _data_section(m.get("data"))
            + _tosa_section(metrics.get("tosa_check"))
        )

    @classmethod
    def inputs(cls, run: Run) -> tuple:
        check = TosaCheck(run) if run.cfg.evaluation.tosa_check else None
        run.inspect_lowering = check  # seen by the lowering, if it runs now
        quantized, samples = run.get(Quantize), run.samples("evaluation")
        ahead = None
        if background.possible():
            # The comparison needs only the quantized model: a child computes it on the other
            # core while this process lowers (background.py); the same code on the same
            # process image, so the same numbers.
            run.model()
            ahead = background.Child(
                "comparing float and quantized", lambda: _compare(run, quantized, samples), close_fds=KeyLock.held
            )
            run.children.append(ahead)
        run.get(Lower)
        return quantized, samples, check, ahead

    @classmethod
    def compute(cls, run: Run, quantized: Quantized, samples, check: TosaCheck | None, ahead=None) -> Evaluated:
        accuracy = None
        if ahead is not None:
            run.children.remove(ahead)
            with contextlib.suppress(background.ChildFailed):  # then computed here, where its error is raised as ever
                accuracy = ahead.result()
        if accuracy is None:
            accuracy = _compare(run, quantized, samples)
        seen = {"source": "evaluation", **data.summary(samples, run.cfg.model.input_specs())}
        if check is None:
            return Evaluated(accuracy, {"status": "off", "reason": "evaluation.tosa_check is false"}, None, seen)
        if check.outcome() is None:  # the lowering came from the cache: lower again, in memory
            run_lower(run.cfg, quantized.program, check)
        result, npz = check.outcome()
        return Evaluated(accuracy, result, npz, seen)


def _compare(run: Run, quantized: Quantized, samples) -> dict[str, Any]:
    with numerics.numeric_stage():  # in a child too: the stage's numeric platform
        return compare(run.model(), quantized.program, samples, quantized.batched, run.cfg.evaluation.batch_size)


def data_section(cfg: BuildConfig, quant: dict[str, Any], evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """The preprocessing (model.preprocess) and what the samples held: per stage, the count,
    each input's range and the class balance of the draw; warnings when the calibration and
    evaluation ranges are far apart or a source preprocesses otherwise than the model says.
    `quant`: the quantize stage's info (the calibration samples, the first layer)."""
    calibration = quant.get("data")
    warnings = data.range_warnings(calibration, evaluation)
    for key, ds in (("calibration", cfg.calibration), ("evaluation", cfg.evaluation)):
        steps = ds.dataset.get("preprocess")
        if steps is not None and steps != cfg.model.preprocess:
            warnings.append(
                f"{key}.dataset.preprocess differs from model.preprocess: the firmware headers carry "
                "model.preprocess, so the device would not compute what this build measured"
            )
    return {
        "preprocess": [{"step": dict(s), "does": preprocess.describe(s)} for s in cfg.model.preprocess],
        "calibration": calibration,
        "evaluation": evaluation,
        "first_layer": quant.get("first_layer"),
        "warnings": warnings,
    }


# --- its sections of report.md ----------------------------------------------------------


def _accuracy_section(acc: dict[str, Any] | None) -> list[str]:
    if not acc:
        return []
    columns = ["float_top1", "quantized_top1", "accuracy_drop", "sqnr_db", "cosine", "max_abs_error"]
    header = ["float top-1 %", "quantized top-1 %", "drop (points)", "SQNR dB", "cosine", "max abs error"]
    return [
        "",
        f"## Accuracy ({acc['samples']} evaluation samples)",
        "",
        markdown_table(header, [[acc[c] for c in columns]]),
    ]


def _data_section(section: dict[str, Any] | None) -> list[str]:
    """Preprocessing, the samples each stage saw, and what the first layer could absorb."""
    if not section:
        return []
    out = ["", "## Data", ""]
    steps = section.get("preprocess") or []
    if steps:
        out.append("Preprocessing (model.preprocess), raw frame to the model's first input:")
        out += [""] + [f"{i}. {s['does']}" for i, s in enumerate(steps, 1)] + [""]
    rows = []
    for which in ("calibration", "evaluation"):
        seen = section.get(which)
        if not seen:
            continue
        ranges = "; ".join(f"{x['name']} [{x['min']:.4g}, {x['max']:.4g}] mean {x['mean']:.4g}" for x in seen["inputs"])
        classes = seen.get("classes")
        balance = ", ".join(f"{k}: {n}" for k, n in classes.items()) if classes else "unlabelled"
        rows.append([seen.get("source", which), seen["samples"], ranges, balance])
    if rows:
        out.append(markdown_table(["samples of", "count", "value range per input", "classes drawn"], rows))
    out += _absorb(steps, section.get("first_layer"))
    for w in section.get("warnings") or []:
        out += ["", f"> **Warning**: {w}"]
    return out


def _absorb(steps: list[dict[str, Any]], layer: dict[str, Any] | None) -> list[str]:
    affine = [s["step"]["op"] for s in steps if s["step"]["op"] in ("scale", "normalize")]
    if not affine or not layer or not layer.get("absorbs"):
        return []
    means = [s["step"]["mean"] for s in steps if s["step"]["op"] == "normalize"]
    shifts = any(v != 0 for mean in means for v in (mean if isinstance(mean, list) else [mean]))
    exact = (
        "; it zero-pads its input, and after the fold a padded raw 0 no longer stands for the normalized 0 (the "
        "mean shifts it), so the outputs at the borders change unless the device pads with the mean instead"
        if layer["padding"] and shifts
        else ", exactly"
    )
    return [
        "",
        f"The first layer ({layer['op']} `{layer['node']}`) could absorb the {' and '.join(affine)} step(s): folding "
        f"them into its weights and bias lets the device feed the raw pixels{exact}.",
    ]


def _tosa_section(tosa: dict[str, Any] | None) -> list[str]:
    if not tosa:
        return []
    out = ["", "## TOSA reference check", ""]
    if tosa.get("status") == "done":
        out.append(
            "The program as deployed (NPU partitions on the TOSA reference model, with the flatbuffers Vela "
            "compiled; CPU ops in PyTorch), "
            f"{tosa['samples']} samples: max difference {tosa['max_lsb_diff']} output LSB "
            f"({tosa['max_abs_diff']:.4g} absolute) "
            f"from the PT2E quantized model, top-1 agreement {tosa['top1_agreement']}%."
        )
    else:
        out.append(f"{tosa.get('status')}: {tosa.get('reason')}")
    return out
