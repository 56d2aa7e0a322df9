"""Numbers that say whether a build can be trusted, measured on the host (no NPU here).

- `compare()`: float model vs the PT2E quantized model on the evaluation samples: top-1 where
  labels exist, and always output SQNR, cosine similarity and max abs error.
- `tosa_check()`: the exact TOSA flatbuffer Vela consumed, run on the TOSA reference model
  (tosa-tools), against the PT2E quantized model in the integer domain.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Optional


def _outputs(fn, x, batch: int = 1):
    import torch

    with torch.no_grad():
        return torch.cat([fn(chunk).reshape(len(chunk), -1) for chunk in torch.split(x, batch)])


def error_metrics(reference, test) -> dict[str, float]:
    """SQNR (dB), cosine similarity and max abs error of `test` against `reference`."""
    import torch

    ref, out = reference.double().flatten(), test.double().flatten()
    noise = torch.sum((ref - out) ** 2).item()
    signal = torch.sum(ref ** 2).item()
    sqnr = math.inf if noise == 0 else 10 * math.log10(signal / noise) if signal > 0 else -math.inf
    cos = torch.nn.functional.cosine_similarity(ref, out, dim=0).item()
    return {"sqnr_db": round(sqnr, 3), "cosine": round(cos, 6), "max_abs_error": float((ref - out).abs().max())}


def _top1(logits, labels) -> Optional[float]:
    if labels is None or logits.shape[1] < 2:
        return None
    return round(100.0 * (logits.argmax(1) == labels).double().mean().item(), 3)


def compare(float_model, quantized_program, samples) -> dict[str, Any]:
    """Float vs PT2E quantized outputs on the same samples (accuracy in percent)."""
    float_out = _outputs(float_model, samples.x, batch=64)
    quant_out = _outputs(quantized_program.module(), samples.x)  # the program is batch 1
    result: dict[str, Any] = {"samples": len(samples), **error_metrics(float_out, quant_out)}
    f1, q1 = _top1(float_out, samples.y), _top1(quant_out, samples.y)
    result.update({"float_top1": f1, "quantized_top1": q1, "accuracy_drop": None if f1 is None else round(f1 - q1, 3)})
    return result


def boundary_qparams(program) -> tuple[Optional[tuple], Optional[tuple]]:
    """(scale, zero_point, dtype) of the quantize right after the input and of the dequantize
    right before the output, when the graph has that shape."""
    graph = program.graph_module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    q_in = next((u for u in placeholders[0].users if "quantize_per_tensor" in str(u.target)), None) if len(placeholders) == 1 else None
    out_node = next(n for n in graph.nodes if n.op == "output")
    outs = out_node.args[0]
    dq_out = outs[0] if len(outs) == 1 and "dequantize_per_tensor" in str(getattr(outs[0], "target", "")) else None

    def params(node):
        return None if node is None else (float(node.args[1]), int(node.args[2]), node.args[5])

    return params(q_in), params(dq_out)


@contextlib.contextmanager
def _quiet_stderr():
    """The reference model warns about TOSA versions on the C++ stderr; keep that off the
    user's terminal for the duration of the check."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tosa_check(quantized_program, tosa_files: list[Path], samples, num: int, cpu_compute_ops: int = 0) -> dict[str, Any]:
    """Run the TOSA flatbuffer given to Vela on the reference model for `num` samples and
    compare with the PT2E quantized model: max difference in output LSBs, top-1 agreement."""
    import numpy as np
    import torch
    import tosa_reference_model as reference

    if len(tosa_files) != 1:
        return {"status": "skipped", "reason": f"the program has {len(tosa_files)} NPU partitions; the check covers programs lowered as one"}
    if cpu_compute_ops:
        return {"status": "skipped", "reason": f"{cpu_compute_ops} compute op(s) run on the CPU beside the NPU partition; the check covers programs lowered whole"}
    q_in, dq_out = boundary_qparams(quantized_program)
    if q_in is None or dq_out is None:
        return {"status": "skipped", "reason": "the NPU partition is not fed by a quantized model input and read by a dequantized output"}
    graph = tosa_files[0].read_bytes()
    module = quantized_program.module()
    (in_scale, in_zp, in_dtype), (out_scale, out_zp, out_dtype) = q_in, dq_out
    in_info, out_info = torch.iinfo(in_dtype), torch.iinfo(out_dtype)
    max_lsb, agree, n = 0, 0, min(num, len(samples))
    for i in range(n):
        x = samples.x[i : i + 1]
        q = torch.clamp(torch.round(x / in_scale) + in_zp, in_info.min, in_info.max).to(in_dtype)
        with _quiet_stderr():
            outputs, status = reference.run(graph, [q.numpy()])
        if str(status) != "GraphStatus.TOSA_VALID":
            return {"status": "failed", "reason": f"reference model status {status}"}
        tosa_q = torch.from_numpy(np.asarray(outputs[0]).astype(np.int64))
        with torch.no_grad():
            ref = module(x)
        ref_q = torch.round(ref / out_scale).to(torch.int64) + out_zp
        if tosa_q.numel() != ref_q.numel():
            return {"status": "skipped", "reason": f"output sizes differ (TOSA {tuple(tosa_q.shape)}, PyTorch {tuple(ref_q.shape)})"}
        if tosa_q.shape != ref_q.shape and tosa_q.dim() == 4:
            tosa_q = tosa_q.permute(0, 3, 1, 2)  # NHWC -> NCHW
        tosa_q = tosa_q.reshape(ref_q.shape)
        max_lsb = max(max_lsb, int((tosa_q - ref_q).abs().max()))
        agree += int(tosa_q.flatten().argmax() == ref_q.flatten().argmax())
    return {"status": "done", "samples": n, "max_lsb_diff": max_lsb, "top1_agreement": round(100.0 * agree / n, 3)}
