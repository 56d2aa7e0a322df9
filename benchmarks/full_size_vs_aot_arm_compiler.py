"""A full-size network's cold build, ethosu-build against ExecuTorch's own CLI, in one run.

    python benchmarks/full_size_vs_aot_arm_compiler.py [--repeat 1] [--target ethos-u85-256]

MobileNetV2 1.0 (3.5 M parameters, 224x224, tests/zoo_models.py: torchvision's architecture
and initialization, seeded) for the target, int8, 128 calibration samples. Both tools get the
same model and the same calibration samples (what `calibration=random` draws, saved as .pt
files for the CLI). ExecuTorch's backends/arm/scripts/aot_arm_compiler.py quantizes, lowers and
writes the .pte; ethosu-build also evaluates the build on 256 samples (float against
quantized) and runs the deployed program on the TOSA reference model, which the CLI does not,
and its time includes that work. Every ethosu-build run starts with an empty store.

Target (issue 32): ethosu-build at most 1.25x the CLI's time. Times are wall-clock seconds of
whole commands, imports included; "peak RSS" is the largest resident set of the command's
processes (getrusage of the waited child, which includes the children it waited for).
--repeat N runs N alternating pairs and reports the median ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TESTS = Path(__file__).resolve().parents[1] / "tests"
SHAPE = [1, 3, 224, 224]
SAMPLES = 128  # calibration=random's default


def _run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, output) of a command that must succeed. The peak is
    wait4's for that command: the largest of its process and the children it waited for."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with tempfile.TemporaryFile("w+") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read()
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{output[-3000:]}")
    return seconds, usage.ru_maxrss / 1024, output


def prepare(work: Path) -> tuple[Path, Path]:
    """The model file in the CLI's format and the calibration samples, one .pt per sample."""
    import torch

    from ethosu_build.data import random

    model_file = work / "model_mobilenet_v2.py"
    model_file.write_text(
        "import torch\nimport zoo_models\n"
        f"ModelUnderTest = zoo_models.mobilenet_v2()\nModelInputs = (torch.zeros({SHAPE}),)\n"
    )
    calib = work / "calibration"
    calib.mkdir(exist_ok=True)
    x = random(SHAPE, seed=0, size=SAMPLES)  # what calibration=random (seed 0) draws
    for i in range(SAMPLES):
        torch.save(x[i].unsqueeze(0), calib / f"{i:04d}.pt")
    return model_file, calib


def cli(work: Path, model_file: Path, calib: Path, target: str) -> tuple[float, float, str]:
    command = [sys.executable, "-m", "executorch.backends.arm.scripts.aot_arm_compiler", "--model_name"]
    command += [str(model_file), "--target", target, "--delegate", "--quantize", "--calibration_data", str(calib)]
    return _run([*command, "-i", str(work / "cli_intermediates"), "-o", str(work / "cli.pte")], work)


def ours(work: Path, target: str, store: str) -> tuple[float, float, str]:
    args = [
        "model.factory._target_=zoo_models.mobilenet_v2",
        "model.name=mobilenet_v2",
        f"model.input_shape=[{','.join(map(str, SHAPE))}]",
        f"target={target}",
        "calibration=random",
        "evaluation=random",
        f"calibration.num_samples={SAMPLES}",
        f"store.root={store}",
        f"hydra.run.dir={store}_run",
    ]
    return _run([str(BIN / "ethosu-build"), *args], work)


def stage_times(log: str) -> str:
    return ", ".join(f"{name} {s} s" for name, s in re.findall(r"(\w+): done in ([\d.]+) s", log))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1, help="alternating pairs (the median ratio is reported)")
    parser.add_argument("--target", default="ethos-u85-256")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ethosu-bench-") as tmp:
        work = Path(tmp)
        model_file, calib = prepare(work)  # not timed
        ratios = []
        for i in range(args.repeat):
            theirs, theirs_mb, _ = cli(work, model_file, calib, args.target)
            mine, mine_mb, log = ours(work, args.target, f"store_{i}")
            ratio = mine / theirs
            ratios.append(ratio)
            print(
                f"MobileNetV2 1.0 224x224 {args.target}, {SAMPLES} calibration samples: ethosu-build {mine:.1f} s "
                f"({stage_times(log)}), aot_arm_compiler {theirs:.1f} s, ratio {ratio:.2f} "
                f"({'meets' if ratio <= 1.25 else 'MISSES'} target 1.25); "
                f"peak RSS: ethosu-build {mine_mb:.0f} MB, aot_arm_compiler {theirs_mb:.0f} MB",
                flush=True,
            )
        if len(ratios) > 1:
            median = statistics.median(ratios)
            print(f"  median ratio of {len(ratios)} pairs: {median:.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
