"""The model-coverage tier: common architectures (tests/zoo_models.py, seeded weights, no
downloads) built by ethosu-build and by ExecuTorch's own CLI
(backends/arm/scripts/aot_arm_compiler.py) for an Ethos-U55 and an Ethos-U85, on the same
calibration samples. Where the CLI builds, ethosu-build builds, and Vela's cycle estimate of
the last NPU partition agrees (the CLI's summary CSV holds the last partition only:
tests/test_crosscheck.py).

Each build is cheap (few samples); the CLI pays torch's import per run, so the tier is marked
slow and still runs in CI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import build_in_process, csv_rows

from ethosu_build.errors import BudgetBreached

# name -> the inputs' shapes (batch 1)
TIER = {
    "kws_conv1d": [[1, 40, 49]],  # Conv1d audio, mean over time
    "kws_lstm": [[1, 4, 10]],  # recurrent (4 steps: each is unrolled into its own ops, 12 took 99 s)
    "mobilenet_v3_block": [[1, 3, 64, 64]],  # depthwise-separable, squeeze-excite, hardswish
    "unet_tiny": [[1, 1, 32, 32]],  # nearest upsampling, skip concatenation
    "detector": [[1, 1, 8, 8]],  # two outputs
    "two_inputs": [[1, 1, 16, 16], [1, 8]],  # several inputs
}
TARGETS = ["ethos-u55-128", "ethos-u85-256"]
SAMPLES = 8
# For the U85 only: the vision transformer of issue 32 (attention, LayerNorm, GELU), whose
# lowering alone takes about 40 s here, and a full-size network, MobileNetV2 1.0 at 224x224
# (3.5 M parameters; each tool takes 35-45 s on it here).
VIT = {"vit_tiny": [[1, 3, 32, 32]], "mobilenet_v2": [[1, 3, 224, 224]]}
CASES = [(name, target) for name in TIER for target in TARGETS] + [(name, "ethos-u85-256") for name in VIT]


def _inputs(shapes: list[list[int]]) -> list[str]:
    if len(shapes) == 1:
        return [f"model.input_shape={shapes[0]}".replace(" ", "")]
    specs = ",".join(f"{{name: in{i}, shape: {s}, dtype: float32}}".replace(" ", "") for i, s in enumerate(shapes))
    return ["model.input_shape=null", f"model.inputs=[{specs}]"]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Per model, a folder of seeded calibration samples as both tools read them: one .pt file
    per sample (a tensor, or a tuple of one per input), batch dimension included."""
    root = tmp_path_factory.mktemp("zoo_samples")
    generator = torch.Generator().manual_seed(0)
    for name, shapes in {**TIER, **VIT}.items():
        (root / name).mkdir()
        for i in range(SAMPLES):
            xs = tuple(torch.rand(s, generator=generator) for s in shapes)
            torch.save(xs[0] if len(xs) == 1 else xs, root / name / f"{i:04d}.pt")
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo_tier") / "store"  # shared: targets of one TOSA spec share stages


def _cli(name: str, shapes: list[list[int]], target: str, calibration, folder) -> subprocess.CompletedProcess:
    inputs = ", ".join(f"torch.zeros({s})" for s in shapes)
    (folder / "model.py").write_text(
        f"import sys, torch\nsys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})\n"
        f"import zoo_models\nModelUnderTest = zoo_models.{name}()\nModelInputs = ({inputs},)\n"
    )
    command = [sys.executable, "-m", "executorch.backends.arm.scripts.aot_arm_compiler", "--model_name", "model.py"]
    command += ["--target", target, "--delegate", "--quantize", "--calibration_data", str(calibration)]
    return subprocess.run([*command, "-i", "inter", "-o", "out.pte"], cwd=folder, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "target"), CASES)
def test_where_executorch_builds_we_build_with_the_same_vela_cycles(name, target, samples, store, tmp_path):
    shapes = {**TIER, **VIT}[name]
    cli = _cli(name, shapes, target, samples / name, tmp_path)
    overrides = [
        f"model.factory._target_=zoo_models.{name}",
        f"model.name={name}",
        *_inputs(shapes),
        f"target={target}",
        "quantization=int8",
        "calibration=folder",
        f"calibration.dataset.path={samples / name}",
        "evaluation=folder",
        f"evaluation.dataset.path={samples / name}",
        "evaluation.tosa_samples=2",
    ]
    ours = build_in_process(overrides, store)
    assert cli.returncode == 0, cli.stderr[-3000:]  # a model the CLI cannot build is not in the tier
    m = ours.artifact.manifest()
    assert m["delegation"]["npu_partitions"] >= 1
    (cli_last,) = csv_rows(next((tmp_path / "inter" / "output").glob("*_summary_*.csv")))
    ours_last = m["metrics"]["vela"]["partitions"][-1]
    assert float(cli_last["cycles_total"]) == pytest.approx(ours_last["cycles"], rel=0.01)
    if name == "mobilenet_v2":  # here, where its export, calibration and lowering are cached
        _does_not_fit_corstone_320_in_sram_only_and_auto_finds_a_mode(overrides, store)


def _does_not_fit_corstone_320_in_sram_only_and_auto_finds_a_mode(overrides: list[str], store) -> None:
    """Issue 33's case (docs/boards.md): the full-size network on corstone-320 (an
    Ethos-U85-256, as built above) breaches the board in Sram_Only, naming the pool, and with
    target.memory_mode=auto a mode that fits is kept, the program in DDR."""
    board = [*overrides, "board=corstone-320"]  # its memory mode: Sram_Only
    with pytest.raises(BudgetBreached) as breached:
        build_in_process(board, store)
    text = str(breached.value)
    assert "Sram_Only" in text and "model.pte" in text and "in SRAM" in text and "memory_mode=auto" in text
    m = build_in_process([*board, "target.memory_mode=auto"], store).artifact.manifest()
    fit = m["board"]
    assert fit["fits"] and fit["memory_mode"] in ("Shared_Sram", "Dedicated_Sram_384KB")
    assert {t["memory_mode"]: t["fits"] for t in fit["tried"]}["Sram_Only"] is False
    pte = next(p for p in fit["pools"] if p["pool"] == "pte")
    assert pte["port"] == "axi1" and pte["region"] == "DDR"  # where Vela's Dram estimate holds
