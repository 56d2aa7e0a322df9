"""The evaluate stage's TOSA check: the exact TOSA flatbuffers Vela consumed, run on the TOSA
reference model (tosa-tools) as the program is deployed, against the PT2E quantized model in
the integer domain, every output in its own quantization scale. `TosaCheck` runs it beside the
lowering (background.py); its inputs and outputs are stored for `ethosu-artifacts diff` and the
firmware's bundled program (`npz_bytes`).

torch, numpy and the TOSA reference model are imported inside functions: pipeline/build.py
imports the stage modules on the up-to-date path.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from .. import background, numerics
from ..errors import EthosuError, first_line
from ..files import markdown_table
from ..store.cache import KeyLock
from .fused_qdq import runnable
from .outputs import flat_outputs
from .quantize import Quantize, io_qparams
from .stage import Run

log = logging.getLogger("ethosu_build.build")


def _inverse(perm: tuple[int, ...]) -> list[int]:
    inverse = [0] * len(perm)
    for i, axis in enumerate(perm):
        inverse[axis] = i
    return inverse


@contextlib.contextmanager
def quiet_stderr():
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


def deployed_interpreter(tosa_by_payload: dict[str, bytes], failures: list[str], run: Callable | None = None):
    """A torch.fx Interpreter of the partitioned program that runs each NPU partition on the
    TOSA reference model (its status appended to `failures` when not valid): `run(flatbuffer,
    inputs)` (by default the reference model's own run; deployed_layers.py's also reads the
    tensors inside) returns (outputs, status)."""
    import hashlib

    import numpy as np
    import torch
    import tosa_reference_model as reference

    run = run or reference.run

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
            with quiet_stderr():
                outputs, status = run(graph, [physical(a, node) for a, node in zip(args[1:], n.args[1:])])
            if str(status) != "GraphStatus.TOSA_VALID":
                failures.append(str(status))
            vals = n.meta.get("val")
            vals = vals if isinstance(vals, (tuple, list)) else [None] * len(outputs)
            return tuple(logical(o, v) for o, v in zip(outputs, vals))

    return DeployedInterpreter


def _user_outputs(program, values: list) -> list:
    """`values`, one per output of `program`'s graph, for its user outputs only (not the
    buffers it writes back)."""
    specs = program.graph_signature.output_specs
    if len(specs) != len(values):
        return values
    return [v for v, spec in zip(values, specs) if spec.kind.name == "USER_OUTPUT"]


def deployed_outputs(
    edge_program, tosa_by_payload: dict[str, bytes], samples, indices, run: Callable | None = None
) -> list[list[Any]] | str:
    """The lowered program as deployed, every NPU partition executed by the TOSA reference
    model on the exact flatbuffer Vela compiled and the CPU ops in PyTorch, on the samples at
    `indices`: per sample, its user outputs as numpy arrays; or the reference model's status
    where a partition was not valid. The costly part of the check, which samples split. `run`:
    as for deployed_interpreter."""
    failures: list[str] = []
    sig = edge_program.graph_signature
    state = {**edge_program.state_dict, **edge_program.constants}
    interpreter = deployed_interpreter(tosa_by_payload, failures, run)(edge_program.graph_module)
    outputs = []
    for i in indices:
        x = iter(samples.select(slice(i, i + 1)))  # the user inputs, in the signature's order
        args = [next(x) if spec.kind.name == "USER_INPUT" else state[spec.target] for spec in sig.input_specs]
        deployed = interpreter.run(*args)
        if failures:
            return f"reference model status {failures[0]}"
        deployed = list(deployed) if isinstance(deployed, (tuple, list)) else [deployed]
        outputs.append([o.detach().numpy() for o in _user_outputs(edge_program, deployed)])
    return outputs


def compare_deployed(deployed: list[list[Any]] | str, quantized_program, samples) -> tuple[dict[str, Any], Any]:
    """Each output of the deployed program (`deployed_outputs` on the first samples, in order)
    against the PT2E quantized model's: max difference in LSBs of that output's quantization
    scale, max abs difference, and the top-1 agreement of the first output. With several
    outputs the top-level figures are the worst output's and `outputs` holds each one's."""
    import numpy as np
    import torch

    if isinstance(deployed, str):
        return {"status": "failed", "reason": deployed}, None
    module = runnable(quantized_program)  # the same numbers, bit for bit, faster
    dq_out = _user_outputs(quantized_program, io_qparams(quantized_program)[1])
    agree, n = 0, len(deployed)
    names: list[str] = []
    diffs: list[float] = []
    for i, outputs in enumerate(deployed):
        with torch.no_grad():
            names, expected = flat_outputs(module(*samples.select(slice(i, i + 1))))
        if len(expected) != len(outputs):
            return {"status": "failed", "reason": f"{len(outputs)} deployed outputs, {len(expected)} quantized"}, None
        diffs = diffs or [0.0] * len(outputs)
        for k, (d, e) in enumerate(zip(outputs, expected)):
            d = torch.from_numpy(np.asarray(d))
            diffs[k] = max(diffs[k], (d.double().flatten() - e.double().flatten()).abs().max().item())
        agree += int(np.asarray(outputs[0]).flatten().argmax() == expected[0].flatten().argmax().item())
    scales = [q[0] if q is not None else None for q in dq_out[: len(diffs)]] if len(dq_out) >= len(diffs) else []
    lsbs = [None if s is None else int(round(d / s)) for d, s in zip(diffs, scales)] if scales else [None] * len(diffs)
    result: dict[str, Any] = {
        "status": "done",
        "samples": n,
        "max_abs_diff": max(diffs, default=0.0),
        "top1_agreement": round(100.0 * agree / n, 3),
        # in LSBs of each output's own scale; unknown if an output has none (a float output)
        "max_lsb_diff": None if None in lsbs or not lsbs else max(lsbs),
    }
    if len(diffs) > 1:
        result["outputs"] = [
            {"name": name, "max_abs_diff": d, "max_lsb_diff": lsb} for name, d, lsb in zip(names, diffs, lsbs)
        ]
    # What the program as deployed computed, on which inputs: for `ethosu-artifacts diff`
    # and the firmware's self-test vectors.
    arrays = {f"input_{k}": x[:n].numpy() for k, x in enumerate(samples.x)}
    arrays.update(
        {f"output_{k}": np.concatenate([o[k] for o in deployed]) for k in range(len(deployed[0]))} if deployed else {}
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


class TosaCheck:
    """Called by the lowering with the partitioned program (Run.inspect_lowering): runs the
    deployed program on the evaluation's first `evaluation.tosa_samples` samples, then
    compares (`outcome`). A check that cannot run is a finding, not a failed build. The rest
    of the lowering does not wait for it: where cores are idle, children run the samples, split
    between them (background.py); the comparison, which is cheap, runs here."""

    def __init__(self, run: Run):
        self.run = run
        self._outcome: tuple[dict[str, Any], bytes | None] | None = None
        self._deployed: list[list[Any]] | str | None = None  # run in place
        self._children: list[background.Child] = []

    def __call__(self, edge_program, tosa_by_payload: dict[str, bytes]) -> None:
        n = min(self.run.cfg.evaluation.tosa_samples, len(self.run.samples("evaluation")))
        workers = min(background.workers(), n)
        if workers <= 1:
            self._deployed = self._run(edge_program, tosa_by_payload, range(n))
            return
        # One child per worker, each on its own run of samples: this process has only the
        # lowering's tail left, and then waits for them.
        for part in _parts(n, workers):

            def in_child(part=part):
                deployed = self._run(edge_program, tosa_by_payload, part)
                return deployed if isinstance(deployed, str) else [background.encode_arrays(o) for o in deployed]

            what = f"running samples {part.start}-{part.stop - 1} on the TOSA reference model"
            child = background.Child(what, in_child, close_fds=KeyLock.held)
            self._children.append(child)
            self.run.children.append(child)

    def _run(self, edge_program, tosa_by_payload: dict[str, bytes], indices) -> list[list[Any]] | str:
        try:
            with numerics.numeric_stage():  # in a child too: the stage's numeric platform
                return deployed_outputs(edge_program, tosa_by_payload, self.run.samples("evaluation"), indices)
        except EthosuError:
            raise
        except Exception as exc:
            log.debug("TOSA check failed", exc_info=True)
            return f"{type(exc).__name__}: {first_line(exc)}"

    def _gathered(self) -> list[list[Any]] | str | None:
        """The deployed outputs of every sample, in order, waiting for the children."""
        children, self._children = self._children, []
        if not children:
            return self._deployed
        deployed: list[list[Any]] = []
        failure = None
        for child in children:
            self.run.children.remove(child)
            try:
                said = child.result()
            except background.ChildFailed as exc:  # a finding, as a check that cannot run in place
                said = f"the check's process failed: {exc}"
            if isinstance(said, str):
                failure = failure or said
            else:
                deployed += [background.decode_arrays(o) for o in said]
        return failure or deployed

    def outcome(self) -> tuple[dict[str, Any], bytes | None] | None:
        """(result, the npz of its inputs and outputs) once the check ran, waiting for its
        children; None if no lowering ran it."""
        if self._outcome is None:
            deployed = self._gathered()
            if deployed is None:
                return None
            run = self.run
            try:
                with numerics.numeric_stage():
                    result, arrays = compare_deployed(deployed, run.get(Quantize).program, run.samples("evaluation"))
            except EthosuError:
                raise
            except Exception as exc:
                log.debug("TOSA check failed", exc_info=True)
                result, arrays = {"status": "failed", "reason": f"{type(exc).__name__}: {first_line(exc)}"}, None
            self._outcome = (result, npz_bytes(arrays) if arrays else None)
        return self._outcome


def _parts(n: int, k: int) -> list[range]:
    """0..n-1 in k consecutive runs, as even as can be."""
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def tosa_section(tosa: dict[str, Any] | None) -> list[str]:
    """report.md's TOSA check: the figures, and a row per output when there are several."""
    if not tosa:
        return []
    out = ["", "## TOSA reference check", ""]
    if tosa.get("status") != "done":
        return [*out, f"{tosa.get('status')}: {tosa.get('reason')}"]
    several = tosa.get("outputs")
    out.append(
        "The program as deployed (NPU partitions on the TOSA reference model, with the flatbuffers Vela "
        "compiled; CPU ops in PyTorch), "
        f"{tosa['samples']} samples: max difference {tosa['max_lsb_diff']} output LSB "
        f"({tosa['max_abs_diff']:.4g} absolute) "
        f"from the PT2E quantized model{', the worst of its outputs' if several else ''}, "
        f"top-1 agreement {tosa['top1_agreement']}%{' (its first output)' if several else ''}."
    )
    if several:
        rows = [[o["name"], o["max_lsb_diff"], f"{o['max_abs_diff']:.4g}"] for o in several]
        out += ["", markdown_table(["output", "max difference (its LSB)", "max abs difference"], rows)]
    return out
