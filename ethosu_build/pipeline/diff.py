"""Why two programs differ: a semantic diff of two artifacts, ending in one verdict.

- `identical`: the same `model.pte` bytes.
- `equivalent`: the same IO contract, partitions, TOSA graphs and constants; quantization
  parameters within QPARAM_TOLERANCE (relative); the deployed programs' outputs within 1 LSB
  on the same samples.
- `different`, with the first cause, in this order: IO contract (shapes, dtypes, layouts,
  boundary quantization), partitions and their TOSA graphs (operators, tensor shapes and
  types), constants (weights exactly; biases within 1 LSB), quantization parameters (scales
  as each rescale's multiplier x 2^-shift, zero points, lookup tables), Vela (compiled for
  another accelerator, memory configuration or flags), outputs.
Vela's command stream and figures for one configuration are reported but decide nothing:
they follow from the above. Everything is read from the stored artifacts: the manifest, `vela/part<i>.tosa`
(the exact TOSA each Vela run compiled), `model.pte` and `check/tosa_io.npz` (the TOSA
check's inputs and the deployed program's outputs on them). See docs/artifacts.md.

numpy, the `tosa` flatbuffer reader and ExecuTorch's .pte reader are imported inside
functions: `ethosu-artifacts` imports this module for `diff` only.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.schema import TargetConfig
from ..store.artifacts import Artifact

MAX_TOSA_IO = 1 << 30  # the TOSA check's samples inflated: far above any build's (16 samples of a 224x224 model)
QPARAM_TOLERANCE = 1e-5  # relative: a float32 scale is exact to 6e-8; a rescale multiplier to 2^-31
LEVELS = ("io", "graph", "constants", "qparams", "vela", "outputs")
TOSA_IO = "check/tosa_io.npz"

# The inputs of a TOSA 1.0 operator that are quantization parameters or weights, by index.
_ROLES = {
    "CONV2D": {1: "weight", 2: "bias", 3: "zero_point", 4: "zero_point"},
    "CONV3D": {1: "weight", 2: "bias", 3: "zero_point", 4: "zero_point"},
    "DEPTHWISE_CONV2D": {1: "weight", 2: "bias", 3: "zero_point", 4: "zero_point"},
    "TRANSPOSE_CONV2D": {1: "weight", 2: "bias", 3: "zero_point", 4: "zero_point"},
    "MATMUL": {1: "weight", 2: "zero_point", 3: "zero_point"},
    "RESCALE": {1: "multiplier", 2: "shift", 3: "zero_point", 4: "zero_point"},
    "AVG_POOL2D": {1: "zero_point", 2: "zero_point"},
    "NEGATE": {1: "zero_point", 2: "zero_point"},
    "TABLE": {1: "table"},
    "MUL": {2: "shift"},
}


@dataclass
class Difference:
    level: str  # one of LEVELS
    what: str  # one line, naming the tensor or field
    decides: bool = True  # False: reported, but within tolerance (or Vela's, which follows)


@dataclass
class Diff:
    a: str
    b: str
    verdict: str = "identical"
    differences: list[Difference] = field(default_factory=list)
    largest_qparam_change: dict[str, Any] | None = None  # {"tensor", "relative"}
    outputs: dict[str, Any] = field(default_factory=dict)
    trust: dict[str, str] = field(default_factory=dict)  # side -> whose key signed it (set by the CLI)

    @property
    def cause(self) -> str | None:
        first = next((d for d in self.differences if d.decides), None)
        return f"{first.level}: {first.what}" if first else None

    def as_json(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "verdict": self.verdict, "cause": self.cause,
            "tolerance": {"qparams_relative": QPARAM_TOLERANCE, "outputs_lsb": 1},
            "largest_qparam_change": self.largest_qparam_change, "outputs": self.outputs, "signed": self.trust,
            "differences": [{"level": d.level, "what": d.what, "decides": d.decides} for d in self.differences],
        }  # fmt: skip


def diff(a: Artifact, b: Artifact, ids: tuple[str, str] | None = None) -> Diff:
    """Why `a` and `b` differ; `ids` names them when they are private copies (the CLI's
    verified snapshots) rather than the versions themselves."""
    ma, mb = a.manifest(), b.manifest()
    result = Diff(*(ids or (a.id, b.id)))
    if ma["files"].get("model.pte", {}).get("sha256") == mb["files"].get("model.pte", {}).get("sha256"):
        return result
    found = result.differences
    found += _io(ma, mb)
    graphs_a, graphs_b = _graphs(a, ma), _graphs(b, mb)
    structural = _structure(graphs_a, graphs_b)
    found += structural
    qparams: list[tuple[str, float]] = []
    if not structural:
        found += _constants(graphs_a, graphs_b, qparams)
    qparams += _io_scales(ma, mb)
    for tensor, rel in qparams:
        if rel > 0:
            found.append(Difference("qparams", f"{tensor}: {_changed_by(rel)}", decides=rel > QPARAM_TOLERANCE))
    if qparams:
        tensor, rel = max(qparams, key=lambda q: q[1])
        # A zero point or a lookup table has no relative change (inf): null, as JSON can carry it.
        result.largest_qparam_change = {"tensor": tensor, "relative": None if math.isinf(rel) else rel}
    result.outputs = _outputs(a, b, ma, mb, (result.a, result.b))
    if result.outputs.get("compared") and result.outputs["max_lsb"] > 1:
        found.append(
            Difference(
                "outputs",
                f"the deployed programs' outputs differ by {result.outputs['max_lsb']} LSB "
                f"on {result.outputs['samples']} samples",
            )
        )
    found += _vela(a, b, ma, mb)
    found.sort(key=lambda d: LEVELS.index(d.level))
    result.verdict = "different" if any(d.decides for d in found) else "equivalent"
    return result


def _changed_by(rel: float) -> str:
    return (
        "changed (a zero point or lookup table: no relative measure)"
        if math.isinf(rel)
        else f"changed by {rel:.3g} relative"
    )


# --- the IO contract ------------------------------------------------------------------------


def _contract(m: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    runtime = (m.get("delegation") or {}).get("runtime") or {}
    return {"input": runtime.get("inputs") or [], "output": runtime.get("outputs") or []}


def _io(ma: dict[str, Any], mb: dict[str, Any]) -> list[Difference]:
    found = []
    ca, cb = _contract(ma), _contract(mb)
    for kind in ("input", "output"):
        if len(ca[kind]) != len(cb[kind]):
            found.append(Difference("io", f"{len(ca[kind])} {kind}(s) vs {len(cb[kind])}"))
            continue
        for i, (x, y) in enumerate(zip(ca[kind], cb[kind])):
            for key in ("shape", "dtype", "layout"):
                if x.get(key) != y.get(key):
                    found.append(Difference("io", f"{kind} {i} {key}: {x.get(key)} vs {y.get(key)}"))
            qa, qb = x.get("quantization") or {}, y.get("quantization") or {}
            for key in ("dtype", "zero_point"):
                if qa.get(key) != qb.get(key):
                    found.append(
                        Difference(
                            "io",
                            f"{kind} {i} quantized as {qa.get('dtype')} zp {qa.get('zero_point')} "
                            f"vs {qb.get('dtype')} zp {qb.get('zero_point')}",
                        )
                    )
                    break
    return found


def _io_scales(ma: dict[str, Any], mb: dict[str, Any]) -> list[tuple[str, float]]:
    changes = []
    ca, cb = _contract(ma), _contract(mb)
    for kind in ("input", "output"):
        for i, (x, y) in enumerate(zip(ca[kind], cb[kind])):
            sa, sb = (x.get("quantization") or {}).get("scale"), (y.get("quantization") or {}).get("scale")
            if sa is not None and sb is not None and sa != sb:
                changes.append((f"{kind} {i} (boundary scale)", abs(sa - sb) / abs(sa)))
    return changes


# --- TOSA graphs ------------------------------------------------------------------------------


@dataclass
class _Op:
    where: str  # "partition 0, op 12 (RESCALE)"
    name: str
    inputs: list[str]
    outputs: list[str]


@dataclass
class _Graph:
    ops: list[_Op]
    tensors: dict[str, tuple[list[int], str, Any]]  # name -> (shape, dtype, data or None)


def _graphs(artifact: Artifact, m: dict[str, Any]) -> list[_Graph]:
    names = sorted(
        (n for n in m["files"] if n.startswith("vela/part") and n.endswith(".tosa")),
        key=lambda n: int(n[len("vela/part") : -len(".tosa")]),
    )
    return [_read_tosa(i, (artifact.path / n).read_bytes()) for i, n in enumerate(names)]


def _read_tosa(partition: int, flatbuffer: bytes) -> _Graph:
    import numpy as np
    import tosa.DType as DType
    import tosa.Op as Op
    import tosa.TosaGraph as TosaGraph

    op_names = {v: k for k, v in vars(Op.Op).items() if not k.startswith("_")}
    dtypes = {v: k for k, v in vars(DType.DType).items() if not k.startswith("_")}
    numpy_of = {
        "INT8": np.int8,
        "INT16": np.int16,
        "INT32": np.int32,
        "FP32": np.float32,
        "BOOL": np.uint8,
        "SHAPE": np.int64,
    }
    graph = TosaGraph.TosaGraph.GetRootAs(flatbuffer, 0)
    ops, tensors = [], {}
    for r in range(graph.RegionsLength()):
        region = graph.Regions(r)
        for bi in range(region.BlocksLength()):
            block = region.Blocks(bi)
            for t in range(block.TensorsLength()):
                tensor = block.Tensors(t)
                dtype = dtypes.get(tensor.Type(), str(tensor.Type()))
                data = None
                if tensor.DataLength():
                    raw = tensor.DataAsNumpy().tobytes()
                    if dtype == "INT48":  # 6 bytes, little endian, sign-extended
                        data = np.array(
                            [int.from_bytes(raw[i : i + 6], "little", signed=True) for i in range(0, len(raw), 6)]
                        )
                    elif dtype == "INT4":  # two per byte
                        packed = np.frombuffer(raw, np.uint8)
                        data = np.stack([(packed & 15).astype(np.int8), (packed >> 4).astype(np.int8)], 1).ravel()
                    else:
                        data = np.frombuffer(raw, numpy_of.get(dtype, np.uint8)).astype(
                            np.int64 if dtype != "FP32" else np.float64
                        )
                tensors[tensor.Name().decode()] = (
                    list(tensor.ShapeAsNumpy()) if tensor.ShapeLength() else [],
                    dtype,
                    data,
                )
            for o in range(block.OperatorsLength()):
                op = block.Operators(o)
                name = op_names.get(op.Op(), str(op.Op()))
                if name == "CONST":
                    continue
                inputs = [op.Inputs(i).decode() for i in range(op.InputsLength())]
                outputs = [op.Outputs(i).decode() for i in range(op.OutputsLength())]
                block_name = f", block {r}.{bi}" if (r, bi) != (0, 0) else ""
                produces = outputs[0] if outputs else "-"
                where = f"partition {partition}{block_name}, op {len(ops)} ({name} -> {produces})"
                ops.append(_Op(where, name, inputs, outputs))
    return _Graph(ops, tensors)


def _structure(ga: list[_Graph], gb: list[_Graph]) -> list[Difference]:
    """Partitions, operators and the shapes and types of the tensors between them."""
    if len(ga) != len(gb):
        return [Difference("graph", f"{len(ga)} NPU partition(s) vs {len(gb)}")]
    for a, b in zip(ga, gb):
        if len(a.ops) != len(b.ops) or any(x.name != y.name for x, y in zip(a.ops, b.ops)):
            first = next(
                (i for i, (x, y) in enumerate(zip(a.ops, b.ops)) if x.name != y.name), min(len(a.ops), len(b.ops))
            )
            left = a.ops[first].where if first < len(a.ops) else "(no more operators)"
            right = b.ops[first].name if first < len(b.ops) else "(no more operators)"
            return [Difference("graph", f"{left} vs {right}; {len(a.ops)} vs {len(b.ops)} operators")]
        for x, y in zip(a.ops, b.ops):
            for ta, tb in zip(x.inputs + x.outputs, y.inputs + y.outputs):
                sa, sb = a.tensors.get(ta), b.tensors.get(tb)
                if sa and sb and (sa[0], sa[1]) != (sb[0], sb[1]):
                    return [Difference("graph", f"{x.where}: tensor {ta} is {sa[1]} {sa[0]} vs {sb[1]} {sb[0]}")]
    return []


def _constants(ga: list[_Graph], gb: list[_Graph], qparams: list[tuple[str, float]]) -> list[Difference]:
    """Weights and other constants exactly; biases within 1 LSB; quantization parameters as
    relative changes (appended to `qparams`)."""
    import numpy as np

    found = []
    for a, b in zip(ga, gb):
        for x, y in zip(a.ops, b.ops):
            roles = _ROLES.get(x.name, {})
            consts = {}
            for i, (ta, tb) in enumerate(zip(x.inputs, y.inputs)):
                da, db = a.tensors.get(ta, (None, None, None))[2], b.tensors.get(tb, (None, None, None))[2]
                if da is None or db is None:
                    continue
                role = roles.get(i, "constant")
                consts[role] = consts.get(role, []) + [(ta, da, db)]
                if da.shape != db.shape:
                    found.append(Difference("constants", f"{x.where}: {role} {ta} has {da.size} values vs {db.size}"))
                    continue
                delta = np.abs(da - db)
                if not delta.any():
                    continue
                if role in ("weight", "constant"):
                    found.append(
                        Difference(
                            "constants",
                            f"{x.where}: {role} {ta} differs in {int((delta > 0).sum())} of "
                            f"{da.size} values (max |diff| {delta.max():g})",
                        )
                    )
                elif role == "bias":
                    if (delta > np.maximum(1, 1e-4 * np.abs(da))).any():
                        found.append(Difference("constants", f"{x.where}: bias {ta} differs by up to {delta.max():g}"))
                    else:
                        qparams.append((f"{x.where}: bias {ta}", float((delta / np.maximum(np.abs(da), 1)).max())))
                elif role == "zero_point":
                    qparams.append((f"{x.where}: zero point {ta}", float("inf")))
                elif role == "table":
                    qparams.append((f"{x.where}: lookup table {ta}", 0.0 if delta.max() <= 1 else float("inf")))
            if x.name == "RESCALE" and "multiplier" in consts and "shift" in consts:
                (_, ma_, mb_), (_, sa_, sb_) = consts["multiplier"][0], consts["shift"][0]
                fa, fb = ma_ * np.exp2(-sa_.astype(np.float64)), mb_ * np.exp2(-sb_.astype(np.float64))
                rel = float((np.abs(fa - fb) / np.maximum(np.abs(fa), 1e-300)).max())
                if rel:
                    qparams.append((f"{x.where}: scale (multiplier x 2^-shift)", rel))
    return found


# --- outputs and Vela -------------------------------------------------------------------------


def _outputs(
    a: Artifact, b: Artifact, ma: dict[str, Any], mb: dict[str, Any], names: tuple[str, str] = ("A", "B")
) -> dict[str, Any]:
    """The deployed programs' outputs on the same samples, in LSB of A's output scale, from
    the TOSA checks stored with both artifacts."""
    import numpy as np

    for side, artifact in zip(names, (a, b)):  # an npz inflates: a side not signed here could hold GBs of zeros
        try:
            with (
                zipfile.ZipFile(artifact.path / TOSA_IO) if (artifact.path / TOSA_IO).is_file() else nullcontext() as z
            ):
                if z is not None and sum(i.file_size for i in z.infolist()) > MAX_TOSA_IO:
                    return {"compared": False, "reason": f"{side}'s {TOSA_IO} inflates beyond {MAX_TOSA_IO} bytes"}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            return {"compared": False, "reason": f"{side}'s {TOSA_IO} is not an npz ({type(exc).__name__})"}
    if TOSA_IO not in ma["files"] or TOSA_IO not in mb["files"]:
        return {
            "compared": False,
            "reason": "an artifact holds no TOSA check outputs "
            "(evaluation.tosa_check=false, or built before they were stored)",
        }
    with (
        np.load(io.BytesIO((a.path / TOSA_IO).read_bytes()), allow_pickle=False) as za,
        np.load(io.BytesIO((b.path / TOSA_IO).read_bytes()), allow_pickle=False) as zb,
    ):
        inputs = sorted(k for k in za.files if k.startswith("input_"))
        if inputs != sorted(k for k in zb.files if k.startswith("input_")) or any(
            za[k].shape != zb[k].shape or not np.array_equal(za[k], zb[k]) for k in inputs
        ):
            return {"compared": False, "reason": "their TOSA checks ran on different samples"}
        # in the program's order: output_2 before output_10 (the runtime contract's order)
        outputs = sorted((k for k in za.files if k.startswith("output_")), key=_position)
        worst = 0.0
        for i, k in enumerate(outputs):
            if k not in zb.files or za[k].shape != zb[k].shape:
                return {"compared": False, "reason": f"{k} differs in shape"}
            scale = ((_contract(ma)["output"][i : i + 1] or [{}])[0].get("quantization") or {}).get("scale")
            diff = float(np.abs(za[k].astype(np.float64) - zb[k].astype(np.float64)).max()) if za[k].size else 0.0
            worst = max(worst, diff / scale if scale else diff)
        return {"compared": True, "samples": int(za[inputs[0]].shape[0]) if inputs else 0, "max_lsb": round(worst, 3)}


def _position(key: str) -> tuple[int, str]:
    """An npz key's position: output_10 after output_2."""
    tail = key.rsplit("_", 1)[-1]
    return (int(tail), key) if tail.isdigit() else (1 << 30, key)


def _vela(a: Artifact, b: Artifact, ma: dict[str, Any], mb: dict[str, Any]) -> list[Difference]:
    from ..config.targets import resolved_memory_mode, resolved_system_config, vela_flags
    from ..config.validate import convert

    found = []
    settings = []
    for m in (ma, mb):
        t = convert(TargetConfig, m["config"].get("target") or {}, "target", [])
        settings.append({
            "accelerator": t.accelerator, "system config": resolved_system_config(t),
            "memory mode": resolved_memory_mode(t), "Vela flags": vela_flags(t), ".ini": t.config_ini,
        })  # fmt: skip
    for key in settings[0]:
        if settings[0][key] != settings[1][key]:
            found.append(Difference("vela", f"compiled for {key} {settings[0][key]} vs {settings[1][key]}"))
    pa, pb = _payloads(a.path / "model.pte"), _payloads(b.path / "model.pte")
    for i, (x, y) in enumerate(zip(pa, pb)):
        if x != y:
            found.append(Difference("vela", f"partition {i}: Vela's command stream and weights differ", decides=False))
    ta = ((ma.get("metrics") or {}).get("vela") or {}).get("total") or {}
    tb = ((mb.get("metrics") or {}).get("vela") or {}).get("total") or {}
    for key in ("cycles", "sram_kib", "flash_kib", "scratch_bytes"):
        if ta.get(key) != tb.get(key):
            found.append(Difference("vela", f"{key}: {ta.get(key)} vs {tb.get(key)}", decides=False))
    return found


def _payloads(pte: Path) -> list[str]:
    """sha256 of each delegate payload (Vela's output per partition) in a .pte."""
    from .pte import payloads

    return [hashlib.sha256(p).hexdigest() for p in payloads(pte.read_bytes())]
