"""Quantization-aware training: BatchNorm folded, prepare_qat_pt2e, a short seeded training
loop over the fake-quantized model, then convert_pt2e (docs/quantization.md).

torch and torchao are imported inside functions: the quantize stage's module imports this one
on the up-to-date path.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import first_line
from . import quantizer
from .export import printed_to_log
from .progress import bar

log = logging.getLogger("ethosu_build.build")


def fold_batchnorm(graph_module) -> None:
    """Fold each BatchNorm into the convolution before it, in place, as prepare_pt2e does for
    post-training quantization. prepare_qat_pt2e would instead simulate the BatchNorm during
    training and fold it at convert time into a bias that the quantizer never annotated; the
    Ethos-U partitioner then leaves those convolutions on the CPU (seen with ExecuTorch
    1.5.1). QAT thus fine-tunes the folded weights and bias."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    _fuse_conv_bn_(graph_module)


def qat_loss(loss: str, labelled: bool) -> str:
    """The loss `auto` resolves to: the labels when there are some, else the float model."""
    if loss == "auto":
        return "cross_entropy" if labelled else "distill"
    return loss


def train(prepared, float_model, samples, qat, batched: bool) -> dict[str, Any]:
    """A short, seeded training loop over the fake-quantized model (prepare_qat_pt2e's
    output): `qat.epochs` passes over the samples in `qat.batch_size` batches (one at a time
    when the export has no dynamic batch), shuffled by `qat.seed`. Single-threaded, so the
    trained weights, and the program's bytes, do not depend on the machine's core count.
    Returns what the manifest records."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    loss_name = qat_loss(qat.loss, samples.y is not None)
    targets = samples.y
    if loss_name == "distill":
        with torch.no_grad():
            targets = torch.cat([float_model(*c) for c in samples.chunks(qat.batch_size if batched else 1)])
    step = qat.batch_size if batched else 1
    params = [p for p in prepared.parameters() if p.requires_grad]
    opt = (
        torch.optim.Adam(params, lr=qat.lr)
        if qat.optimizer == "adam"
        else torch.optim.SGD(params, lr=qat.lr, momentum=0.9)
    )
    gen = torch.Generator().manual_seed(qat.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    losses = []
    try:
        move_exported_model_to_train(prepared)
        batches = []  # sample indices per step: a fresh shuffle each epoch
        for _ in range(qat.epochs):
            batches.extend(torch.randperm(len(samples), generator=gen).split(step))
        with bar("training (QAT)", "batches", total=len(batches)) as (progress, task):
            for idx in batches:
                opt.zero_grad()
                out = prepared(*samples.select(idx))
                if loss_name == "cross_entropy":
                    loss = torch.nn.functional.cross_entropy(out, targets[idx])
                else:
                    loss = torch.nn.functional.mse_loss(out, targets[idx])
                loss.backward()
                opt.step()
                losses.append(loss.item())
                progress.advance(task)
    finally:
        move_exported_model_to_eval(prepared)
        torch.set_num_threads(threads)
    per_epoch = len(batches) // qat.epochs
    return {
        "samples": len(samples),
        "epochs": qat.epochs,
        "batch_size": step,
        "steps": len(batches),
        "optimizer": qat.optimizer,
        "lr": qat.lr,
        "loss": loss_name,
        "loss_first_epoch": round(sum(losses[:per_epoch]) / per_epoch, 6),
        "loss_last_epoch": round(sum(losses[-per_epoch:]) / per_epoch, 6),
    }


def quantize(q, programs: dict[str, Any], samples, float_model, qat) -> tuple[Any, dict[str, Any]]:
    """Fold BatchNorm -> prepare_qat_pt2e -> train on `samples` (the qat dataset) ->
    convert_pt2e, in batches on the batch-dynamic program when there is one and it prepares
    (else on the static program, one sample per step, the reason in one log line and the
    manifest). Returns (the converted module, info for the manifest)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared, reason = None, programs["unbatched_reason"]
    if programs["dynamic"] is not None:
        try:  # nothing is trained yet: the static program's weights are untouched by a failure
            with printed_to_log("quantize (QAT): preparing the batch-dynamic program"):
                prepared = _prepared(q, programs["dynamic"], True)
        except Exception as exc:
            reason = f"preparing the batch-dynamic program failed ({type(exc).__name__}: {first_line(exc)})"
            log.info("quantize (QAT): %s; training one sample per step on the batch-1 program", reason)
            log.debug("quantize (QAT): the batch-dynamic program did not prepare", exc_info=True)
    batched = prepared is not None
    if not batched:
        prepared = _prepared(q, programs["static"], False)
    trained = train(prepared, float_model, samples, qat, batched)
    info = {
        "calibration": {
            "samples": 0,
            "batch_size": trained["batch_size"],
            "calls": 0,
            "batched": batched,
            "unbatched_reason": reason,
            "note": "quantization-aware training: the ranges come from training, not from the calibration set",
        },
        "qat": trained,
    }
    return convert_pt2e(prepared), info


def _prepared(q, program, batched: bool):
    module = program.module(check_guards=False)
    fold_batchnorm(module)
    return quantizer.prepare(q, module, batched, qat=True)
