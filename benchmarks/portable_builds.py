"""Portable builds: what pinning the numeric platform (ethosu_build/numerics.py) buys and costs.

    python benchmarks/portable_builds.py [--only cost|shas]

- shas: the default build's model.pte sha256 under simulated machines (the instruction set
  ATen, oneDNN and MKL pick, and the thread count), with the kernels pinned (as every build
  is) and unpinned (numerics.pin and numerics.numeric_stage made no-ops: the host's own
  kernels, as before the pin).
- cost: mobilenet_v1_025, 256 calibration samples: the time in calibration (observer
  calls) and in the whole quantize stage, pinned against unpinned.
Each build runs in its own process and a fresh store, on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MACHINES = {
    "this host, 2 threads": {"OMP_NUM_THREADS": "2"},
    "sse4.1, 1 thread": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"},
    "avx2, 4 threads": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                        "OMP_NUM_THREADS": "4"},
}  # fmt: skip

DRIVER = r"""
import contextlib, json, sys, time
pinned = sys.argv[1] == "pinned"
from ethosu_build import numerics
if pinned:  # as the console scripts do on import, before torch loads
    numerics.pin()
else:  # the host's own kernels and threads, as before the pin
    numerics.numeric_stage = contextlib.nullcontext
from ethosu_build.pipeline import quantizer
calls = []
original = quantizer.calibrate
def timed(*a, **k):
    t0 = time.perf_counter(); out = original(*a, **k); calls.append(time.perf_counter() - t0); return out
quantizer.calibrate = timed
from ethosu_build.config.compose import compose
from ethosu_build.fingerprint import file_sha256
from ethosu_build.pipeline.build import build
container, recipe, _ = compose(sys.argv[3:] + [f"store.root={sys.argv[2]}"])
r = build(container, recipe=recipe)
m = r.artifact.manifest()
print(json.dumps({"sha256": file_sha256(r.artifact.path / "model.pte"), "calibration_s": sum(calls),
                  "quantize_s": m["stages"]["quantize"]["seconds"], "platform": m["platform"]}))
"""


def run(mode: str, env: dict[str, str], overrides: list[str]) -> dict:
    import os

    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run([sys.executable, "-c", DRIVER, mode, str(Path(tmp) / "store"), *overrides],
                             capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp)  # fmt: skip
        if res.returncode:
            raise SystemExit(res.stderr[-3000:])
        return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["cost", "shas"])
    parser.add_argument("--runs", type=int, default=2, help="runs per mode for the cost (the best is kept)")
    args = parser.parse_args()
    if args.only in (None, "shas"):
        print("| machine | unpinned sha256 | pinned sha256 |\n|---|---|---|")
        for name, env in MACHINES.items():
            shas = [run(mode, env, [])["sha256"][:16] for mode in ("unpinned", "pinned")]
            print(f"| {name} | `{shas[0]}` | `{shas[1]}` |", flush=True)
    if args.only in (None, "cost"):
        overrides = [
            "model=mobilenet_v1_025",
            "calibration.num_samples=256",
            "evaluation.num_samples=16",
            "evaluation.tosa_check=false",
        ]
        print("\n| mobilenet_v1_025, 256 samples | calibration s | quantize stage s |\n|---|---|---|")
        for mode in ("unpinned", "pinned"):
            best = min(
                (run(mode, MACHINES["this host, 2 threads"], overrides) for _ in range(args.runs)),
                key=lambda r: r["calibration_s"],
            )
            print(f"| {mode} | {best['calibration_s']:.2f} | {best['quantize_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
