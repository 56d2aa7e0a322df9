"""The model zoo (tests/zoo_models.py) builds through the real pipeline for Ethos-U85-256 int8,
and the batch-dynamic path never costs a build: where it fails, the build falls back to the
static batch-1 path (ExecuTorch's aot_arm_compiler's), says why in one line and in the
manifest, and prints no generated code or traceback to the console (issue 32)."""

from __future__ import annotations

import logging

import pytest
from conftest import build_in_process

from ethosu_build.pipeline import quantizer

ZOO = {
    # 4x4 patches of a 32x32 image, two pre-norm blocks with nn.MultiheadAttention: its
    # batch-dynamic export has `4*s77` (batch x heads) views
    "vit_tiny": ["model.factory._target_=zoo_models.vit_tiny", "model.input_shape=[1,3,32,32]"],
    # 40 MFCC x 49 frames, mean over time: the quantizer's mean decomposition writes the batch's
    # symbol into its reshapes
    "kws_conv1d": ["model.factory._target_=zoo_models.kws_conv1d", "model.input_shape=[1,40,49]"],
}
CHEAP = [
    "target=ethos-u85-256",
    "quantization=int8",
    "calibration=random",
    "evaluation=random",
    "calibration.num_samples=8",
    "evaluation.num_samples=8",
    "evaluation.tosa_samples=2",
]
FX_CODE = "generated forward function"  # torch.fx's header above a failing GraphModule's code


def _config(model: str, *more: str) -> list[str]:
    return [*ZOO[model], f"model.name={model}", *CHEAP, *more]


def _assert_quiet(capfd) -> None:
    err = capfd.readouterr().err
    assert FX_CODE not in err and "Traceback" not in err, err[-3000:]


@pytest.fixture(scope="module")
def zoo_root(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")  # shared: each model's export stage is reused


SLOW = pytest.mark.slow  # the ViT's lowering alone takes about 40 s here


@pytest.mark.parametrize("model", [pytest.param("vit_tiny", marks=SLOW), pytest.param("kws_conv1d", marks=SLOW)])
def test_zoo_model_builds_for_u85(model, zoo_root, capfd):
    m = build_in_process(_config(model), zoo_root).artifact.manifest()
    _assert_quiet(capfd)
    assert m["delegation"]["npu_partitions"] >= 1 and m["delegation"]["npu_ops"] > 0
    assert m["quantization"]["applied"]["ops_by_scheme"].get("int8", 0) > 0
    cal = m["quantization"]["calibration"]
    assert cal["samples"] == 8
    # where the batched path is not taken, the manifest says why
    assert cal["batched"] or (cal["calls"] == 8 and cal["unbatched_reason"])
    assert m["metrics"]["tosa_check"]["status"] == "done"


def _validate_as_executorch_does(model):
    from executorch.backends.arm.quantizer import EthosUQuantizer

    EthosUQuantizer.validate(None, model)  # its check, which takes a symbolic size for a tensor


def _symbolic_sizes_left(prepared):
    return 0  # the quantizer's reshapes keep naming the batch's symbol: NameError at any call


@pytest.mark.parametrize(
    "model, undone, why",
    [
        # ExecuTorch's own device check rejects the batch-dynamic program: prepare fails
        pytest.param("vit_tiny", ("_validate", _validate_as_executorch_does), "different device inputs", marks=SLOW),
        # the first batch fails in the generated code, which torch.fx prints to stderr
        ("kws_conv1d", ("bind_symbolic_sizes", _symbolic_sizes_left), "NameError"),
    ],
)
def test_a_failing_batched_path_falls_back_to_batch_one(model, undone, why, zoo_root, monkeypatch, capfd, caplog):
    """The failures issue 32 reported, brought back by undoing what avoids them: the build
    still succeeds, sample by sample, with one line saying why and the reason in the
    manifest; no generated code or traceback on the console, the traceback in the build log."""
    monkeypatch.setattr(quantizer, *undone)
    caplog.set_level(logging.DEBUG, logger="ethosu_build")
    # another calibration batch size: another quantize key, so the stage runs again
    m = build_in_process(_config(model, "calibration.batch_size=4"), zoo_root).artifact.manifest()
    _assert_quiet(capfd)
    cal = m["quantization"]["calibration"]
    assert cal["batched"] is False and cal["calls"] == 8 and cal["batch_size"] == 1
    assert why in cal["unbatched_reason"]
    said = [r for r in caplog.records if r.levelno >= logging.INFO and "one sample at a time" in r.getMessage()]
    said = [r for r in said if r.getMessage().startswith("quantize")]
    assert len(said) == 1 and why in said[0].getMessage()
    # the build log (debug) keeps the traceback, down to the generated code's failing line
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert debug and why in caplog.text and "Traceback" in caplog.text
    assert m["delegation"]["npu_partitions"] >= 1


def test_torch_fx_printing_generated_code_stays_off_the_console(capfd, caplog):
    """torch.fx prints a failing GraphModule's generated code to stderr before it raises:
    quantizer.call does not let it, and printed_to_log sends it to the build log, while what
    a step that succeeds prints (a warning) still reaches the user."""
    import sys

    import torch

    from ethosu_build.pipeline.export import printed_to_log

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x.view(4) + 1

    graph = torch.fx.symbolic_trace(Flat())
    caplog.set_level(logging.DEBUG, logger="ethosu_build")
    with pytest.raises(RuntimeError):
        quantizer.call(graph, torch.zeros(5))
    with pytest.raises(RuntimeError), printed_to_log("a step"):
        graph(torch.zeros(5))
    _assert_quiet(capfd)
    assert FX_CODE in caplog.text
    with printed_to_log("a step"):
        print("a warning", file=sys.stderr)
    assert "a warning" in capfd.readouterr().err
