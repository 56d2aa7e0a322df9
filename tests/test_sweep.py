"""Real Hydra multiruns: every configuration builds its own version and leaves a result; a
configuration Vela rejects fails alone, the others are still built, the summary is written
and the sweep exits non-zero; a re-run skips what is done; a killed sweep can be summarized."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from conftest import BIN, csv_rows, manifest, run_cli


def _sweep_dir(root):
    (found,) = list((root / "sweeps").glob("*/*"))
    return found


def _rows(sweep_dir):
    return csv_rows(sweep_dir / "summary.csv")


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_multirun_builds_each_configuration_and_writes_the_summary(tmp_path):
    args = ["-m", "target=ethos-u55-128,ethos-u65-256", "calibration.num_samples=32"]
    res = run_cli(args, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    base = tmp_path / "outputs" / "artifacts" / "digits_cnn"
    targets = sorted(manifest(base / v)["config"]["target"]["accelerator"] for v in ("v1", "v2"))
    assert targets == ["ethos-u55-128", "ethos-u65-256"]
    # the second target shares the first one's TOSA specification: only Vela ran for it
    assert manifest(base / "v2")["stages"]["lower"]["status"] == "cached"
    assert "2/2 job(s) done, 0 failed" in res.stdout  # the live count (Hydra logs to stdout)

    sweep = _sweep_dir(tmp_path / "outputs")
    rows = _rows(sweep)
    assert [r["status"] for r in rows] == ["built", "built"]
    by_target = {r["target"]: r for r in rows}
    for r in rows:
        m = manifest(tmp_path / "outputs" / "artifacts" / r["artifact"])
        assert int(r["cycles"]) == m["metrics"]["vela"]["total"]["cycles"]
        assert r["quantized_top1"] != ""
    # a faster target with the same accuracy dominates: exactly it is on the front
    fast = min(rows, key=lambda r: float(r["inference_ms"]))
    md = (sweep / "summary.md").read_text()
    assert f"| {fast['job']} * |" in md and md.count(" * |") == 1
    assert (sweep / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(by_target) == {"ethos-u55-128", "ethos-u65-256"}

    # the same sweep again: every job is up to date, no stage runs
    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    newest = max((tmp_path / "outputs" / "sweeps").glob("*/*"), key=lambda p: p.name)
    assert [r["status"] for r in _rows(newest)] == ["up_to_date", "up_to_date"]
    assert all(r["stages_ran"] == "" for r in _rows(newest))


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_failed_configuration_is_a_row_and_the_sweep_goes_on(user_repo):
    res = run_cli(
        [
            "-m",
            "hydra.searchpath=[file://conf]",
            "model=upsampler",
            "target=ethos-u55-128",
            "quantization=a16w8,int8",
            "store.root=store",
        ],
        user_repo,
    )
    assert res.returncode == 1
    assert "a16w8" in res.stderr and "1 failed" in res.stderr
    built = sorted(
        p.name for p in (user_repo / "store" / "artifacts" / "upsampler").iterdir() if p.name.startswith("v")
    )
    assert built == ["v1"]
    assert (
        manifest(user_repo / "store" / "artifacts" / "upsampler" / "v1")["config"]["quantization"]["scheme"] == "int8"
    )
    rows = {r["scheme"]: r for r in _rows(_sweep_dir(user_repo / "store"))}
    assert rows["a16w8"]["status"] == "failed" and "could not run on NPU" in rows["a16w8"]["error"]
    assert rows["a16w8"]["artifact"] == "" and rows["int8"]["status"] == "built"


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_a_killed_sweep_can_be_summarized(tmp_path):
    """SIGKILL after the first job's result: `ethosu-artifacts summarize` lists it as built
    and the job that was running as incomplete."""
    proc = subprocess.Popen(
        [str(BIN / "ethosu-build"), "-m", "target=ethos-u55-128,ethos-u85-256", "calibration.num_samples=16"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "ETHOSU_BUILD_WARM": "off"},  # the sweep's own processes are killed
    )
    try:
        deadline = time.time() + 600
        while not list((tmp_path / "outputs" / "sweeps").glob("*/*/0/result.json")) and time.time() < deadline:
            time.sleep(0.2)
        while not list((tmp_path / "outputs" / "sweeps").glob("*/*/1/.hydra")) and time.time() < deadline:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sweep = _sweep_dir(tmp_path / "outputs")
    assert not (sweep / "summary.csv").exists()  # the callback never ran
    res = run_cli(["summarize", str(sweep)], tmp_path, tool="ethosu-artifacts")
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in _rows(sweep)] == ["built", "incomplete"]
    assert "1 of 2 job(s) done" in (sweep / "summary.md").read_text()
