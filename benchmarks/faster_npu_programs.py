"""Vela-estimated inference time per model and target: ExecuTorch's default lowering against
the safe lowering options, and whether the outputs stayed the same.

    python benchmarks/faster_npu_programs.py [--models ds_cnn,mobilenet_v1_025,resnet8]
                                             [--targets ethos-u55-128,ethos-u85-256] [--store DIR]

Runs real `ethosu-build -m` sweeps (model x target, joblib launcher, one per variant below)
into one store (fresh unless --store names one), then reads every artifact's manifest:

    default   lowering=default: what ExecuTorch does
    fast      lowering=fast: channels-last IO + avg_pool_crop
    fast+s2d  fast, plus conv_space_to_depth (worth it only for small, 1-channel inputs)

Per model and target it prints each variant's estimate, then for the best one: NPU partitions
and CPU compute ops (default -> best), SQNR against the float model, the TOSA reference check
of the program as deployed, and the largest difference between the default's and the best
build's PT2E quantized outputs over the evaluation samples, in output steps (LSB).

Vela estimates the NPU only: ops left on the CPU (and the extra NPU invocation of a second
partition) cost time the default's figure does not include; the CPU-op column shows them.
Targets (issue 7): on ethos-u55-128, mobilenet_v1_025 -30% and ds_cnn -10%; resnet8 one partition.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
VARIANTS = {
    "default": ["lowering=default"],
    "fast": ["lowering=fast"],
    "fast+s2d": ["lowering=fast", "lowering.rewrites=[avg_pool_crop,conv_space_to_depth]"],
}


def _sweep(store: Path, models: list[str], targets: list[str], variant: list[str]) -> list[dict]:
    """One multirun; the manifests of its artifacts."""
    before = set((store / "sweeps").glob("*/*")) if (store / "sweeps").is_dir() else set()
    cmd = [
        str(BIN / "ethosu-build"),
        "-m",
        f"model={','.join(models)}",
        f"target={','.join(targets)}",
        *variant,
        f"store.root={store}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"sweep failed ({res.returncode}): {' '.join(cmd)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    (sweep_dir,) = set((store / "sweeps").glob("*/*")) - before
    rows = [json.loads(r.read_text()) for r in sweep_dir.glob("*/result.json")]
    return [json.loads((store / "artifacts" / row["artifact"] / "manifest.json").read_text()) for row in rows]


def _outputs(store: Path, model: str, target: str, variant: list[str]):
    """The PT2E quantized outputs over the evaluation samples (quantize stage from the cache)
    and the output's quantization step."""
    import torch
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from ethosu_build.config.validate import validate
    from ethosu_build.pipeline.build import quantized_model
    from ethosu_build.pipeline.quantize import boundary_qparams

    with initialize_config_module("ethosu_build.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}", f"target={target}", *variant, f"store.root={store}"])
    _, program, _, samples = quantized_model(validate(OmegaConf.to_container(cfg, resolve=True)))
    with torch.no_grad():
        out = torch.cat([program.module()(samples.x[i : i + 1]) for i in range(len(samples))])
    return out, boundary_qparams(program)[1][0]


def _lsb_diff(store: Path, model: str, target: str, variant: list[str]) -> int:
    (a, step_a), (b, step_b) = (_outputs(store, model, target, v) for v in (VARIANTS["default"], variant))
    return int(round((a - b).abs().max().item() / max(step_a, step_b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ds_cnn,mobilenet_v1_025,resnet8")
    parser.add_argument("--targets", default="ethos-u55-128,ethos-u85-256")
    parser.add_argument("--store", type=Path, help="reuse this store (default: a fresh temporary one)")
    args = parser.parse_args()
    models, targets = args.models.split(","), args.targets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp)
        found = {}
        for name, variant in VARIANTS.items():
            for m in _sweep(store, models, targets, variant):
                found[(m["config"]["model"]["name"], m["config"]["target"]["accelerator"], name)] = m
        print(
            "| model | target | "
            + " | ".join(f"{v} ms" for v in VARIANTS)
            + " | best | change | NPU partitions | CPU compute ops "
            "| SQNR dB | TOSA check, LSB | default vs best outputs, LSB |"
        )
        print("|---|---|" + "---|" * len(VARIANTS) + "---|---|---|---|---|---|---|")
        for model in models:
            for target in targets:
                ms = {v: found[(model, target, v)]["metrics"]["vela"]["total"]["inference_ms"] for v in VARIANTS}
                best = min(VARIANTS, key=lambda v: (ms[v], list(VARIANTS).index(v)))
                d, b = found[(model, target, "default")], found[(model, target, best)]
                pair = lambda get, d=d, b=b: f"{get(d)} → {get(b)}"  # noqa: E731
                print(
                    f"| {model} | {target} | "
                    + " | ".join(f"{ms[v]:.3f}" for v in VARIANTS)
                    + f" | {best} | {100 * (ms[best] - ms['default']) / ms['default']:+.1f}% "
                    f"| {pair(lambda m: m['delegation']['npu_partitions'])} | "
                    f"{pair(lambda m: m['delegation']['cpu_compute_op_count'])} "
                    f"| {pair(lambda m: m['metrics']['accuracy']['sqnr_db'])} | "
                    f"{b['metrics']['tosa_check'].get('max_lsb_diff')} "
                    f"| {_lsb_diff(store, model, target, VARIANTS[best])} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
