"""Vela-estimated inference time per model and target: ExecuTorch's default lowering against
the best safe options (`lowering=fast`), and whether the outputs stayed the same.

    python benchmarks/faster_npu_programs.py [--models ds_cnn,mobilenet_v1_025,resnet8]
                                             [--targets ethos-u55-128,ethos-u85-256] [--store DIR]

Runs one real `ethosu-build -m` sweep (model x target x lowering=default,fast, joblib
launcher) into a fresh store, unless --store names one to reuse, then reads every artifact's
manifest. Per pair it prints Vela's estimate, NPU partitions, CPU compute ops, SQNR against
the float model, the TOSA reference check, and the largest difference between the two
builds' PT2E quantized outputs in output LSBs (0: the options changed no output value).

Vela estimates the NPU only: ops left on the CPU (and the extra NPU invocation of a second
partition) cost time the default's figure does not include; the CPU-op column shows them.
Target (issue 7): on ethos-u55-128, mobilenet_v1_025 -30% and ds_cnn -10%; resnet8 one partition.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
LOWERINGS = ("default", "fast")


def _sweep(store: Path, models: list[str], targets: list[str]) -> Path:
    cmd = [str(BIN / "ethosu-build"), "-m", f"model={','.join(models)}", f"target={','.join(targets)}",
           f"lowering={','.join(LOWERINGS)}", f"store.root={store}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"sweep failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return max((store / "sweeps").glob("*/*"))


def _manifests(sweep_dir: Path, store: Path) -> dict[tuple[str, str, str], dict]:
    found = {}
    for result in sweep_dir.glob("*/result.json"):
        row = json.loads(result.read_text())
        m = json.loads((store / "artifacts" / row["artifact"] / "manifest.json").read_text())
        lowering = next(o.split("=", 1)[1] for o in row["overrides"] if o.startswith("lowering="))
        found[(m["config"]["model"]["name"], m["config"]["target"]["accelerator"], lowering)] = m
    return found


def _output_lsb_diff(store: Path, model: str, target: str) -> int:
    """Largest |default - fast| over the evaluation samples, in the output's quantization step,
    between the two builds' PT2E quantized programs (taken from the store's stage cache)."""
    import torch

    from ethosu_build.build import quantized_model
    from ethosu_build.evaluate import boundary_qparams
    from ethosu_build.validate import validate
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    outputs, scale = [], None
    for lowering in LOWERINGS:
        with initialize_config_module("ethosu_build.conf", version_base="1.3"):
            cfg = compose("config", overrides=[f"model={model}", f"target={target}", f"lowering={lowering}", f"store.root={store}"])
        cfg = validate(OmegaConf.to_container(cfg, resolve=True))
        _, program, _, samples = quantized_model(cfg)
        with torch.no_grad():
            outputs.append(torch.cat([program.module()(samples.x[i : i + 1]) for i in range(len(samples))]))
        scale = boundary_qparams(program)[1][0]
    return int(round((outputs[0] - outputs[1]).abs().max().item() / scale))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ds_cnn,mobilenet_v1_025,resnet8")
    parser.add_argument("--targets", default="ethos-u55-128,ethos-u85-256")
    parser.add_argument("--store", type=Path, help="reuse this store (default: a fresh temporary one)")
    args = parser.parse_args()
    models, targets = args.models.split(","), args.targets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp)
        found = _manifests(_sweep(store, models, targets), store)
        print("| model | target | default ms | fast ms | change | partitions | CPU compute ops | SQNR dB | TOSA check LSB | default vs fast LSB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for model in models:
            for target in targets:
                d, f = found[(model, target, "default")], found[(model, target, "fast")]
                ms = [m["metrics"]["vela"]["total"]["inference_ms"] for m in (d, f)]
                both = lambda get: " → ".join(str(get(m)) for m in (d, f))  # noqa: E731
                print(f"| {model} | {target} | {ms[0]:.3f} | {ms[1]:.3f} | {100 * (ms[1] - ms[0]) / ms[0]:+.1f}% "
                      f"| {both(lambda m: m['delegation']['npu_partitions'])} | {both(lambda m: m['delegation']['cpu_compute_op_count'])} "
                      f"| {both(lambda m: m['metrics']['accuracy']['sqnr_db'])} | {both(lambda m: m['metrics']['tosa_check'].get('max_lsb_diff'))} "
                      f"| {_output_lsb_diff(store, model, target)} |", flush=True)


if __name__ == "__main__":
    main()
