"""The numeric platform: every build computes on the same kernels, so a recipe gives the same
bytes on every x86-64 machine, whatever its instruction set and core count.

Float kernels choose their code path by the host's instruction set (ATen's AVX2/AVX-512
kernels, oneDNN's JIT and its cache-size blocking, MKL's dispatch, NNPACK's AVX2 path) and
sum in an order that depends on it and on the thread count; the observed ranges then move
by an ulp and the scales, and so the program's bytes, change (docs/recipes.md,
"Portable builds"). A build therefore computes on one platform everywhere:

- ATEN_CPU_CAPABILITY=default: ATen's baseline kernels, the same code on every x86-64 CPU;
- MKL_CBWR=COMPATIBLE: MKL's conditional numerical reproducibility, one code path on
  every x86-64 CPU (Intel's guarantee);
- oneDNN and NNPACK off during the numeric stages (their kernels follow the host's ISA and
  cache sizes), so convolutions go through ATen's own im2col + MKL GEMM; and
  ONEDNN_MAX_CPU_ISA=SSE41 should anything still reach oneDNN;
- one thread during the numeric stages (parallel reductions split by thread count).

The environment variables are read when torch loads its libraries, so `pin()` runs before
torch is imported: the console scripts call it at import (app.py, artifacts_cli/), a
library user calls `ethosu_build.numerics.pin()` first. A build in a process that loaded
torch unpinned says so and records `platform.pinned: false`.
"""

from __future__ import annotations

import contextlib
import os
import platform as _host
import sys
from collections.abc import Iterator
from typing import Any

# The environment a build's numerics run under (read by torch's libraries when they load).
ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}
THREADS = 1


def pin() -> bool:
    """Set ENV for this process and the processes it starts (sweep workers) if torch is not
    loaded yet; returns whether this process's kernels are pinned. A value the user set is
    overridden: the platform is part of the build's contract, not a preference."""
    if "torch" not in sys.modules:
        os.environ.update(ENV)
    return pinned()


def pinned() -> bool:
    """Whether torch computes (or will compute) on the pinned kernels in this process."""
    if "torch" in sys.modules:
        import torch

        return torch.backends.cpu.get_cpu_capability() == "DEFAULT" and all(
            os.environ.get(k) == v for k, v in ENV.items()
        )
    return all(os.environ.get(k) == v for k, v in ENV.items())


@contextlib.contextmanager
def numeric_stage() -> Iterator[None]:
    """Around a stage that computes in float (export, quantize, evaluate): one thread, no
    oneDNN, no NNPACK; the previous settings come back afterwards."""
    import torch  # only stages that compute call this

    # torch.backends.mkldnn.flags() would also reset TF32 settings (and warn about them).
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(THREADS)
    torch.backends.mkldnn.enabled = False
    nnpack = torch.backends.nnpack.set_flags(False)
    try:
        yield
    finally:
        torch.backends.nnpack.set_flags(*nnpack)
        torch.backends.mkldnn.enabled = onednn
        torch.set_num_threads(threads)


def describe() -> dict[str, Any]:
    """The numeric platform, for the manifest and a recipe's lock: a platform that differs
    from the lock's is drift (store/provenance.py)."""
    capability = None
    if "torch" in sys.modules:
        import torch

        capability = torch.backends.cpu.get_cpu_capability()
    return {
        "machine": _host.machine(),  # x86_64, aarch64, arm64
        "torch_cpu_capability": (capability or os.environ.get("ATEN_CPU_CAPABILITY", "unset")).lower(),
        "blas": f"MKL, MKL_CBWR={os.environ.get('MKL_CBWR', 'unset')}"
        if _host.machine() in ("x86_64", "AMD64")
        else "the wheel's BLAS",
        "onednn": f"off in numeric stages (ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')})",
        "threads": THREADS,
        "pinned": pinned(),
    }


def lock_fields(platform: dict[str, Any]) -> dict[str, Any]:
    """What a lock pins of the platform: what changes the numbers (not whether torch was
    loaded yet when the manifest was written)."""
    return {k: platform.get(k) for k in ("machine", "torch_cpu_capability", "blas", "threads", "pinned")}
