"""Cross-check with ExecuTorch's own CLI (backends/arm/scripts/aot_arm_compiler.py): the same
model and calibration samples give the same Vela figures.

aot_arm_compiler's `-i DIR` runs Vela for every partition in the same folder, so the summary
CSV it leaves holds the last partition only; it also leaves every partition's TOSA file. The
test compares that CSV with our last partition, and our totals with Vela's own reports on each
TOSA file the CLI left (summed)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import BIN, FEW_EVALUATED, build_in_process, csv_rows

from ethosu_build.data import random

TARGET, SAMPLES = "ethos-u55-128", 32
FIGURES = {"cycles_total": "cycles", "sram_memory_used": "sram_kib", "off_chip_flash_memory_used": "off_chip_flash_kib"}


@pytest.mark.slow
def test_vela_figures_match_aot_arm_compiler(tmp_path):
    (tmp_path / "model.py").write_text(
        "import torch\nfrom ethosu_build.models import mlperf_tiny\n"
        "ModelUnderTest = mlperf_tiny('ds_cnn', seed=0)\nModelInputs = (torch.zeros(1, 1, 49, 10),)\n"
    )
    calib = tmp_path / "calib"
    calib.mkdir()
    samples = random([1, 1, 49, 10], seed=0, size=SAMPLES)  # what calibration=random draws
    for i in range(SAMPLES):
        torch.save(samples[i].unsqueeze(0), calib / f"{i:04d}.pt")
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "executorch.backends.arm.scripts.aot_arm_compiler",
            "--model_name",
            "model.py",
            "--target",
            TARGET,
            "--delegate",
            "--quantize",
            "--calibration_data",
            "calib",
            "-i",
            "inter",
            "-o",
            "out.pte",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]

    # evaluation on few samples: it is not what is compared here
    ours = build_in_process(
        ["model=ds_cnn", f"target={TARGET}", f"calibration.num_samples={SAMPLES}", *FEW_EVALUATED], tmp_path / "store"
    )
    m = ours.artifact.manifest()
    parts = m["metrics"]["vela"]["partitions"]

    (cli_last,) = csv_rows(next((tmp_path / "inter" / "output").glob("*_summary_*.csv")))
    for column, name in FIGURES.items():
        assert float(cli_last[column]) == pytest.approx(parts[-1][name], rel=0.01), column

    tosa_files = sorted((tmp_path / "inter").glob("output_tag*.tosa"))
    assert len(tosa_files) == len(parts) == 2
    t = m["config"]["target"]
    totals = dict.fromkeys(FIGURES, 0.0)
    for i, tosa in enumerate(tosa_files):
        out = tmp_path / f"vela{i}"
        subprocess.run(
            [
                str(BIN / "vela"),
                f"--accelerator-config={TARGET}",
                "--config=Arm/vela.ini",
                f"--system-config={t['system_config']}",
                f"--memory-mode={t['memory_mode']}",
                f"--output-dir={out}",
                str(tosa),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        (row,) = csv_rows(next(out.glob("*_summary_*.csv")))
        for column in FIGURES:
            totals[column] += float(row[column])
    for column, name in FIGURES.items():
        assert totals[column] == pytest.approx(m["metrics"]["vela"]["total"][name], rel=0.01), column
