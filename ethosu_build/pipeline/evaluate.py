"""Stage `evaluate`: numbers that say whether a build can be trusted, measured on the host
(no NPU here). Key: the lowering and the evaluation settings, not Vela (keys.py).

- `compare()`: float model vs the PT2E quantized model on the evaluation samples, per output
  (outputs.py): top-1 where labels exist (on the first output), and always output SQNR,
  cosine similarity and max abs error; with several outputs the top-level figures are the
  worst output's.
- the TOSA check (tosa_check.py): the exact TOSA flatbuffer Vela consumed, run on the TOSA
  reference model (tosa-tools), against the PT2E quantized model in the integer domain.

torch is imported inside functions: pipeline/build.py imports this module on the up-to-date
path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import background, data, numerics
from ..config.schema import BuildConfig
from ..data import preprocess
from ..errors import first_line
from ..files import format_cell, markdown_table
from ..store.cache import Entry, KeyLock
from . import layers
from .export import Export, printed_to_log
from .fused_qdq import runnable
from .lower import Lower, run_lower
from .outputs import flat_outputs
from .quantize import Quantize, Quantized
from .stage import Run, Stage, dataset_key
from .tosa_check import TosaCheck, tosa_section

log = logging.getLogger("ethosu_build.build")


def _outputs(fn, samples, batch: int = 1) -> tuple[list[str], list[Any]]:
    """Each output of `fn` on the samples, `batch` samples per call: (names, one (N, -1)
    tensor per output)."""
    import torch

    names, parts = [], []
    with torch.no_grad():
        for chunk in samples.chunks(batch):
            names, tensors = flat_outputs(fn(*chunk))
            parts.append([t.reshape(len(chunk[0]), -1) for t in tensors])
    return names, [torch.cat(each) for each in zip(*parts)]


def _run(what: str, fn, samples, batch: int = 1, level: int | None = None) -> tuple[list[str], list[Any]] | None:
    """_outputs; with a `level`, None if a call fails (a model written for batch 1 only, or a
    batch-dynamic export whose shape code holds only for the traced batch), and a line at
    that level says why."""
    try:
        with printed_to_log(f"evaluate: {what}"):
            return _outputs(fn, samples, batch)
    except Exception as exc:
        if level is None:
            raise
        why = f"{type(exc).__name__}: {first_line(exc)}"
        log.log(level, "evaluate: %s failed in batches of %d (%s); running it one sample at a time", what, batch, why)
        return None


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


def float_outputs(float_model, samples, batch: int = 32) -> tuple[list[str], list[Any]]:
    """The float model's outputs on the samples, in batches; one sample at a time if a batch
    fails (a float model written for batch 1 only, e.g. reshape(1, -1), is the user's right:
    no line for it)."""
    what = "the float model"
    return _run(what, float_model, samples, batch, logging.DEBUG) or _run(what, float_model, samples)


def quantized_outputs(quantized_program, samples, batched_program=None, batch: int = 32) -> tuple[list[str], list[Any]]:
    """The PT2E quantized model's outputs: in batches on `batched_program` (its batch-dynamic
    export) when given, else, or if a batch fails, sample by sample on the batch-1 program.
    Its quantize -> dequantize pairs run fused (fused_qdq.py: the same numbers, faster)."""
    if batched_program is not None:
        out = _run("the batch-dynamic quantized program", runnable(batched_program), samples, batch, logging.INFO)
        if out is not None:
            return out
    return _run("the quantized program", runnable(quantized_program), samples)


def metrics(float_out: tuple[list[str], list[Any]], quant_out: tuple[list[str], list[Any]], labels) -> dict[str, Any]:
    """Float vs PT2E quantized outputs on the same samples (accuracy in percent).

    Per output: SQNR, cosine and max abs error; top-1 on the first output only (where labels
    exist). With several outputs, `outputs` holds each one's figures, and the top-level ones
    (what budgets, objectives and sweeps read) are the worst: the lowest SQNR and cosine, the
    largest error, the first output's top-1. One output gives the top-level figures alone."""
    names, quant = quant_out
    if len(quant) != len(float_out[1]):
        raise ValueError(f"the float model has {len(float_out[1])} outputs, the quantized one {len(quant)}")
    each = []
    for k, (name, f, q) in enumerate(zip(names, float_out[1], quant)):
        f1, q1 = (_top1(f, labels), _top1(q, labels)) if k == 0 else (None, None)
        drop = None if f1 is None else round(f1 - q1, 3)
        top1 = {"float_top1": f1, "quantized_top1": q1, "accuracy_drop": drop}
        each.append({"name": name, **error_metrics(f, q), **top1})
    first = each[0]
    result: dict[str, Any] = {
        "samples": len(quant[0]),
        "sqnr_db": min(e["sqnr_db"] for e in each),
        "cosine": min(e["cosine"] for e in each),
        "max_abs_error": max(e["max_abs_error"] for e in each),
        **{k: first[k] for k in ("float_top1", "quantized_top1", "accuracy_drop")},
    }
    if len(each) > 1:
        result["outputs"] = each
    return result


def compare(float_model, quantized_program, samples, batched_program=None, batch: int = 32) -> dict[str, Any]:
    """`metrics` of the float model against the PT2E quantized one on the samples."""
    return metrics(
        float_outputs(float_model, samples, batch),
        quantized_outputs(quantized_program, samples, batched_program, batch),
        samples.y,
    )


# --- the stage ---------------------------------------------------------------------------------


@dataclass
class Evaluated:
    accuracy: dict[str, Any]
    tosa_check: dict[str, Any]
    tosa_io: bytes | None = None  # npz: the TOSA check's inputs and the deployed program's outputs
    data: dict[str, Any] | None = None  # the evaluation samples (data.summary)
    layers: dict[str, Any] | None = None  # evaluation.per_layer: the per-layer table (layers.py)
    layers_png: bytes | None = None  # and its plot

    def save(self, folder: Path) -> None:
        info = {"accuracy": self.accuracy, "tosa_check": self.tosa_check, "data": self.data}
        if self.layers is not None:
            info["layers"] = self.layers
        (folder / "info.json").write_text(json.dumps(info, indent=1, sort_keys=True))
        for name, blob in (("tosa_io.npz", self.tosa_io), ("layers.png", self.layers_png)):
            if blob is not None:
                (folder / name).write_bytes(blob)

    @classmethod
    def load(cls, entry: Entry) -> Evaluated:
        info = entry.read_json("info.json")
        tosa_io, png = (entry.read(n) if entry.has(n) else None for n in ("tosa_io.npz", "layers.png"))
        return cls(info["accuracy"], info["tosa_check"], tosa_io, info.get("data"), info.get("layers"), png)


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
            **({"per_layer": True, "layers_version": layers.VERSION} if cfg.evaluation.per_layer else {}),
        }

    @classmethod
    def manifest(cls, run: Run) -> dict[str, Any]:
        evaluated = run.get(Evaluate)
        per_layer = {"layers": evaluated.layers} if evaluated.layers is not None else {}
        return {
            "metrics": {"accuracy": evaluated.accuracy, "tosa_check": evaluated.tosa_check, **per_layer},
            "data": data_section(run.cfg, run.fetched("lower").quant_info, evaluated.data),
        }

    @classmethod
    def files(cls, run: Run) -> dict[str, bytes]:
        evaluated = run.get(Evaluate)  # the TOSA check's inputs and the deployed outputs (pipeline/diff.py)
        files = {} if evaluated.tosa_io is None else {"check/tosa_io.npz": evaluated.tosa_io}
        return {**files, **({"layers.png": evaluated.layers_png} if evaluated.layers_png is not None else {})}

    @staticmethod
    def report(m: dict[str, Any], vela_dir: Path) -> list[str]:
        metrics = m.get("metrics", {})
        return (
            _accuracy_section(metrics.get("accuracy"))
            + layers.report_section(metrics.get("layers"), plotted=(vela_dir.parent / "layers.png").is_file())
            + _data_section(m.get("data"))
            + tosa_section(metrics.get("tosa_check"))
        )

    @classmethod
    def inputs(cls, run: Run) -> tuple:
        check = TosaCheck(run) if run.cfg.evaluation.tosa_check else None
        run.inspect_lowering = check  # seen by the lowering, if it runs now
        samples = run.samples("evaluation")
        # Where a core is idle, children run the float and the quantized model on it
        # (background.py): the same code on the same process image, so the same numbers.
        # The float model needs no quantization: when the quantize stage is about to run,
        # its outputs are computed beside it; the quantized model's beside the lowering.
        float_ahead = None
        if run.will_run(Quantize):
            float_ahead = _ahead(run, "running the float model", lambda: {"float": _float_outputs(run, samples)})
        quantized = run.get(Quantize)
        both = float_ahead is None
        what = "running the float and quantized models" if both else "running the quantized model"

        def quantized_and_maybe_float():
            out = {"quantized": _quantized_outputs(run, quantized, samples)}
            return {**out, "float": _float_outputs(run, samples)} if both else out

        quant_ahead = _ahead(run, what, quantized_and_maybe_float)
        run.get(Lower)
        return quantized, samples, check, [float_ahead, quant_ahead]

    @classmethod
    def compute(cls, run: Run, quantized: Quantized, samples, check: TosaCheck | None, ahead=()) -> Evaluated:
        said = {k: v for child in ahead for k, v in (_taken(run, child) or {}).items()}  # what children computed
        float_out = said.get("float") or _float_outputs(run, samples)
        quant_out = said.get("quantized") or _quantized_outputs(run, quantized, samples)
        accuracy = metrics(float_out, quant_out, samples.y)
        seen = {"source": "evaluation", **data.summary(samples, run.cfg.model.input_specs())}
        table, png = _per_layer(run, quantized, samples) if run.cfg.evaluation.per_layer else (None, None)
        if check is None:
            off = {"status": "off", "reason": "evaluation.tosa_check is false"}
            return Evaluated(accuracy, off, None, seen, table, png)
        if check.outcome() is None:  # the lowering came from the cache: lower again, in memory
            run_lower(run.cfg, quantized.program, check)
        result, npz = check.outcome()
        return Evaluated(accuracy, result, npz, seen, table, png)


def _per_layer(run: Run, quantized: Quantized, samples) -> tuple[dict[str, Any], bytes]:
    """evaluation.per_layer: the table (layers.py) on the evaluation samples, and its plot."""
    import tempfile

    exported = run.get(Export)
    with numerics.numeric_stage():
        table = layers.on_samples(exported, quantized, samples, run.cfg.evaluation.batch_size)
    with tempfile.TemporaryDirectory(prefix="ethosu-layers-") as tmp:
        layers.plot(table, Path(tmp) / "layers.png")
        return table, (Path(tmp) / "layers.png").read_bytes()


# --- the models' outputs, computed here or in a child --------------------------------------------


def _ahead(run: Run, what: str, fn) -> background.Child | None:
    """`fn()`, a dict of outputs, in a child where a core is idle (background.py), else None."""
    if not background.possible():
        return None
    run.model()  # loaded here, so that the child's copy has it and the parent keeps it
    child = background.Child(what, lambda: {k: _encoded(v) for k, v in fn().items()}, close_fds=KeyLock.held)
    run.children.append(child)
    return child


def _taken(run: Run, child: background.Child | None) -> dict[str, Any] | None:
    """A child's outputs; None if it failed (the work is then done here, where its error is
    raised as ever)."""
    if child is None:
        return None
    run.children.remove(child)
    with contextlib.suppress(background.ChildFailed):
        return {k: _decoded(v) for k, v in child.result().items()}
    return None


def _float_outputs(run: Run, samples) -> tuple[list[str], list[Any]]:
    with numerics.numeric_stage():  # in a child too: the stage's numeric platform
        return float_outputs(run.model(), samples, run.cfg.evaluation.batch_size)


def _quantized_outputs(run: Run, quantized: Quantized, samples) -> tuple[list[str], list[Any]]:
    with numerics.numeric_stage():
        return quantized_outputs(quantized.program, samples, quantized.batched, run.cfg.evaluation.batch_size)


def _encoded(outputs: tuple[list[str], list[Any]]) -> dict[str, Any]:
    """Outputs as JSON (a child reports JSON), exact."""
    names, tensors = outputs
    return {"names": names, "arrays": background.encode_arrays(t.detach().numpy() for t in tensors)}


def _decoded(said: dict[str, Any]) -> tuple[list[str], list[Any]]:
    import torch

    return said["names"], [torch.from_numpy(a) for a in background.decode_arrays(said["arrays"])]


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
    """The figures, or with several outputs a row per output and which figures the build's
    budgets, objectives and sweeps read (the worst output's)."""
    if not acc:
        return []
    columns = ["float_top1", "quantized_top1", "accuracy_drop", "sqnr_db", "cosine", "max_abs_error"]
    header = ["float top-1 %", "quantized top-1 %", "drop (points)", "SQNR dB", "cosine", "max abs error"]
    out = ["", f"## Accuracy ({acc['samples']} evaluation samples)", ""]
    each = acc.get("outputs")
    if not each:
        return [*out, markdown_table(header, [[acc[c] for c in columns]])]
    worst = min(each, key=lambda e: e["sqnr_db"])
    return [
        *out,
        markdown_table(["output", *header], [[e["name"], *(e[c] for c in columns)] for e in each]),
        "",
        f"Top-1 is measured on the first output. The build's figures (budgets, objectives, sweeps) are the worst "
        f"output's: SQNR {format_cell(acc['sqnr_db'])} dB (`{worst['name']}`), cosine {format_cell(acc['cosine'])}, "
        f"max abs error {format_cell(acc['max_abs_error'])}.",
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
