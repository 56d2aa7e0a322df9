"""Vela's files: its compilation of each NPU partition, captured, and its reports read back.

The Ethos-U backend runs Vela once per partition in a temporary folder and throws the
folder away. `capture()` wraps the backend's `vela_compile` so that each call runs in a
folder of ours, or, for a lowering shared by several targets, does not run Vela at all and
leaves a placeholder payload naming the partition's TOSA flatbuffer. `compile_partition()`
then runs Vela per target, writing the per-layer CSV too (`--verbose-performance`). Nothing
goes into the compile spec, which is embedded in the .pte: the bytes stay those of a plain
build (tests/test_metrics.py checks this). Metrics come from the CSV files, never from
console text.

Used by the lowering (lower.py: capture), the vela stage (vela.py: compile, collect) and the
report (its readers). ExecuTorch and numpy are imported inside functions: `ethosu-artifacts
show` reads the reports without building.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import csv_text, read_csv

log = logging.getLogger("ethosu_build.build")
SUMMARY_CSV = "summary.csv"
PER_LAYER_CSV = "per_layer.csv"
TOSA_FILE = "out.tosa"
PLACEHOLDER_PREFIX = b"ethosu-build: Vela output of TOSA sha256 "

# Summary columns summed over partitions (memory too: each partition has its own arena and
# command stream, so the sum is what the program needs when they are not shared).
_SUM = {
    "cycles_total": "cycles",
    "cycles_npu": "npu_cycles",
    "nn_macs": "macs",
    "sram_memory_used": "sram_kib",
    "dram_memory_used": "dram_kib",
    "on_chip_flash_memory_used": "on_chip_flash_kib",
    "off_chip_flash_memory_used": "off_chip_flash_kib",
    "total_original_weights": "weights_bytes",
    "total_npu_encoded_weights": "encoded_weights_bytes",
    "scratch_bytes": "scratch_bytes",  # added by collect() from Vela's .npz output
}


@dataclass
class Partition:
    index: int
    folder: Path  # holds out.tosa and output/ (Vela's files)
    processed_sha256: str = ""  # sha256 of the delegate payload Vela produced

    def output_file(self, suffix: str) -> Path:
        found = sorted((self.folder / "output").glob(f"*{suffix}"))
        if not found:
            raise FileNotFoundError(f"Vela wrote no *{suffix} in {self.folder / 'output'}")
        return found[0]


def placeholder(tosa_flatbuffer: bytes) -> bytes:
    """The stand-in delegate payload of a partition lowered without Vela: it names the TOSA
    flatbuffer, so equal partitions get equal payloads (as Vela's output would be)."""
    return PLACEHOLDER_PREFIX + hashlib.sha256(tosa_flatbuffer).hexdigest().encode()


@contextlib.contextmanager
def capture(workdir: Path, run_vela: bool = True) -> Iterator[list[Partition]]:
    """Within the block, every Vela call of the Ethos-U backend leaves its files in
    `workdir/part<i>/` (the TOSA flatbuffer as out.tosa); the yielded list fills with one
    Partition per call. With run_vela=False, Vela does not run: the delegate payload is
    `placeholder(tosa)`, for `compile_partition` to fill in per target later."""
    import executorch.backends.arm.ethosu.backend as backend
    from executorch.backends.arm.arm_vela import VelaCompileResult

    original = backend.vela_compile
    partitions: list[Partition] = []

    def vela_compile(tosa_flatbuffer, args, verbose=False, intermediate_path=None, block_placements=None):
        part = Partition(len(partitions), workdir / f"part{len(partitions)}")
        part.folder.mkdir(parents=True, exist_ok=True)
        if run_vela:
            # `args` is the spec's flag list, rebuilt for each partition; extending a copy
            # leaves the serialized compile spec (and so the .pte) untouched.
            result = original(
                tosa_flatbuffer,
                list(args) + ["--verbose-performance"],
                verbose=verbose,
                intermediate_path=str(part.folder),
                block_placements=block_placements,
            )
        else:
            (part.folder / TOSA_FILE).write_bytes(tosa_flatbuffer)
            result = VelaCompileResult(processed_bytes=placeholder(tosa_flatbuffer))
        part.processed_sha256 = hashlib.sha256(result.processed_bytes).hexdigest()
        partitions.append(part)
        return result

    backend.vela_compile = vela_compile
    try:
        yield partitions
    finally:
        backend.vela_compile = original


def compile_partition(tosa_flatbuffer: bytes, flags: list[str], part: Partition) -> bytes:
    """Vela on one partition's TOSA flatbuffer, as the Ethos-U backend runs it (same flags,
    no block placements), plus the per-layer CSV; returns the delegate payload."""
    from executorch.backends.arm.arm_vela import vela_compile

    part.folder.mkdir(parents=True, exist_ok=True)
    result = vela_compile(
        tosa_flatbuffer, list(flags) + ["--verbose-performance"], verbose=False, intermediate_path=str(part.folder)
    )
    if result.external_blocks:  # only with external block placements, which no config sets
        raise RuntimeError("Vela returned external data blocks, which ethosu-build does not place")
    part.processed_sha256 = hashlib.sha256(result.processed_bytes).hexdigest()
    return result.processed_bytes


def _number(text: str) -> float | int:
    value = float(text)
    return int(value) if value.is_integer() else value


def collect(partitions: list[Partition], dest: Path) -> dict[str, Any]:
    """Write `dest/summary.csv` and `dest/per_layer.csv` (Vela's rows with a `partition`
    column in front) and `dest/part<i>.tosa`, and return the metrics for the manifest."""
    import numpy as np  # 60 ms that the up-to-date path (which imports this module) does not pay

    dest.mkdir(parents=True, exist_ok=True)
    summaries, layers = [], []
    for part in partitions:
        (row,) = read_csv(part.output_file("_summary_*.csv"))
        with np.load(part.output_file("_vela.npz"), allow_pickle=False) as npz:
            # The scratch (arena) the runtime must give this partition's command stream.
            row["scratch_bytes"] = str(int(npz["scratch_shape"][0]))
        summaries.append({"partition": str(part.index), **row})
        layers.extend({"partition": str(part.index), **r} for r in read_csv(part.output_file("_per-layer.csv")))
        shutil.copyfile(part.folder / TOSA_FILE, dest / f"part{part.index}.tosa")
    _write_rows(dest / SUMMARY_CSV, summaries)
    _write_rows(dest / PER_LAYER_CSV, layers)
    return metrics_from_csv(dest)


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text(csv_text(rows) if rows else "")


def metrics_from_csv(folder: Path) -> dict[str, Any]:
    """Per-partition and total figures from the stored CSVs (so anyone can recompute them)."""
    summaries = read_csv(folder / SUMMARY_CSV) if (folder / SUMMARY_CSV).stat().st_size else []
    layers = read_csv(folder / PER_LAYER_CSV) if (folder / PER_LAYER_CSV).stat().st_size else []
    parts = []
    for row in summaries:
        clock = float(row["core_clock"])
        p: dict[str, Any] = {"partition": int(row["partition"]), "core_clock_hz": _number(row["core_clock"])}
        p.update({name: _number(row[col]) for col, name in _SUM.items()})
        p["inference_ms"] = p["cycles"] / clock * 1000.0
        p["npu_ops"] = sum(1 for r in layers if r["partition"] == row["partition"] and r.get("Target") == "NPU")
        parts.append(p)
    total: dict[str, Any] = {
        name: sum(p[name] for p in parts) for name in list(_SUM.values()) + ["inference_ms", "npu_ops"]
    }
    total["partitions"] = len(parts)
    total["flash_kib"] = total["on_chip_flash_kib"] + total["off_chip_flash_kib"]
    if parts:
        total["core_clock_hz"] = parts[0]["core_clock_hz"]
    return {"total": total, "partitions": parts}


def top_layers(folder: Path, n: int = 10) -> list[dict[str, Any]]:
    """The n layers with the most cycles, from the stored per-layer CSV."""
    path = folder / PER_LAYER_CSV
    rows = read_csv(path) if path.stat().st_size else []
    rows.sort(key=lambda r: float(r["Op Cycles"]), reverse=True)
    return [
        {
            "partition": int(r["partition"]),
            "op": r["Original Operator"],
            "name": r["Name"],
            "cycles": _number(r["Op Cycles"]),
            "network_pct": round(float(r["Network% (cycles)"]), 2),
            "macs": _number(r["MAC Count"]),
        }
        for r in rows[:n]
    ]


# Vela's "Original Operator" names (TOSA operators) by what they spend cycles on. Layout ops
# move data without computing: at the edges of the NPU graph and around reshapes they are the
# overhead the PyTorch path adds compared with a model converted from TFLite.
OPERATOR_KINDS = {
    "compute": ("Conv2D", "DepthwiseConv2D", "FullyConnected", "MatMul", "TransposeConv2D", "Conv3D"),
    "pooling": ("AvgPool", "AvgPool2D", "MaxPool", "MaxPool2D", "ReduceSum", "ReduceMax", "ReduceMin", "Mean"),
    "layout": (
        "Transpose",
        "Reshape",
        "Concat",
        "Slice",
        "StridedSlice",
        "Pad",
        "Tile",
        "Squeeze",
        "ExpandDims",
        "Pack",
        "Unpack",
        "Gather",
    ),
    "rescale": ("Rescale", "Quantize", "Dequantize", "Cast"),
}


def operator_kind(op: str) -> str:
    return next((kind for kind, ops in OPERATOR_KINDS.items() if op in ops), "elementwise/other")


def cycles_by_operator(folder: Path) -> list[dict[str, Any]]:
    """NPU cycles per Vela operator type, all partitions together, most expensive first:
    where the cycles go, from the stored per-layer CSV."""
    path = folder / PER_LAYER_CSV
    rows = read_csv(path) if path.is_file() and path.stat().st_size else []
    total = sum(float(r["Op Cycles"]) for r in rows) or 1.0
    by_op: dict[str, list[float]] = {}
    for r in rows:
        entry = by_op.setdefault(r["Original Operator"], [0, 0.0])
        entry[0] += 1
        entry[1] += float(r["Op Cycles"])
    return sorted(
        (
            {
                "op": op,
                "kind": operator_kind(op),
                "layers": n,
                "cycles": _number(str(c)),
                "pct": round(100.0 * c / total, 2),
            }
            for op, (n, c) in by_op.items()
        ),
        key=lambda x: -x["cycles"],
    )
