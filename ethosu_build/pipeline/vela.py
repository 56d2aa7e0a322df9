"""Stage `vela`: Vela per target on the shared lowering's partitions.

The stage (`Vela`, `run_vela`) compiles each partition's TOSA flatbuffer with the target's
flags and fills the output and the target's compile spec into the lowering's .pte
(pte.retarget). Vela's files (the capture during lowering, its CSVs read back) are
vela_files.py's.

ExecuTorch and numpy are imported inside functions: pipeline/build.py and `ethosu-artifacts show`
import this module without building.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import boards, targets
from ..config.schema import BuildConfig
from ..files import markdown_table
from ..fingerprint import file_sha256
from ..store.cache import Entry
from . import cpu_cost, memory, placement, pte, vela_files
from .lower import Lower, Lowered, lowering_failed, run_lower, vela_exited
from .quantize import Quantize
from .stage import Run, Stage
from .vela_files import Partition, collect, compile_partition, placeholder

log = logging.getLogger("ethosu_build.build")


@dataclass
class Compiled:
    pte: bytes  # model.pte for the target
    reports: dict[str, bytes]  # Vela's summary.csv and per_layer.csv, and part<i>.tosa
    metrics: dict[str, Any]
    # The memory bill of the program for this target (memory.py), kept with it: reading it back
    # needs no ExecuTorch (an entry from before it was kept has None; build.py computes it).
    memory: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None  # with a board: where each pool goes (placement.py)

    REPORT_SUFFIXES = (".csv", ".tosa")

    def save(self, folder: Path) -> None:
        (folder / "model.pte").write_bytes(self.pte)
        for name, blob in self.reports.items():
            (folder / name).write_bytes(blob)
        (folder / "info.json").write_text(json.dumps(self.metrics, indent=1, sort_keys=True))
        for name, value in (("memory.json", self.memory), ("fit.json", self.fit)):
            if value is not None:
                (folder / name).write_text(json.dumps(value, indent=1, sort_keys=True))

    @classmethod
    def load(cls, entry: Entry) -> Compiled:
        reports = {n: entry.read(n) for n in sorted(entry.files) if n.endswith(cls.REPORT_SUFFIXES)}
        bill, fit = (entry.read_json(n) if entry.has(n) else None for n in ("memory.json", "fit.json"))
        return cls(entry.read("model.pte"), reports, entry.read_json("info.json"), bill, fit)


class Vela(Stage[Compiled]):
    name = "vela"
    version = 1
    result = Compiled
    needs_model = False  # only the lowering's files

    @classmethod
    def key_inputs(cls, cfg: BuildConfig, keys: dict[str, str]) -> dict[str, Any]:
        t = cfg.target
        return {
            "lower": keys["lower"],
            "accelerator": t.accelerator,
            "system_config": targets.resolved_system_config(t),
            "memory_mode": targets.resolved_memory_mode(t),
            "config_ini": t.config_ini,
            "config_ini_sha256": file_sha256(targets.resolve_config_ini(t.config_ini)),
            "vela_flags": targets.vela_flags(t),
            # a board's regions decide the fit, and with memory_mode auto the program
            **(
                {"board": boards.describe(cfg.board), "placement": placement.VERSION, "cpu_cost": cpu_cost.VERSION}
                if cfg.board is not None
                else {}
            ),
        }

    @classmethod
    def manifest(cls, run: Run) -> dict[str, Any]:
        compiled = run.get(Vela)
        # The bill from the program itself, as export --firmware reads it; kept by this stage
        # (no ExecuTorch import); an entry from before it was kept computes it here.
        bill = compiled.memory or memory.bill(compiled.pte, run.cfg.target)
        board = {"board": compiled.fit} if compiled.fit is not None else {}  # the fit, region by region
        return {"metrics": {"vela": compiled.metrics}, "memory": bill, **board}  # memory: what firmware must reserve

    @classmethod
    def files(cls, run: Run) -> dict[str, bytes]:
        # Only what the vela stage's entry lists travels into the artifact (store/cache.py).
        compiled = run.get(Vela)
        return {"model.pte": compiled.pte, **{f"vela/{name}": blob for name, blob in compiled.reports.items()}}

    @staticmethod
    def report(m: dict[str, Any], vela_dir: Path) -> list[str]:
        v = m.get("metrics", {}).get("vela", {})
        return (
            _performance_section(v)
            + memory.report_section(m.get("memory"))
            + placement.report_section(m.get("board"))
            + cpu_cost.report_section((m.get("board") or {}).get("cpu"))
            + _cycles_section(vela_dir, m.get("lowering") or {})
            + _top_layers_section(vela_dir)
        )

    @classmethod
    def inputs(cls, run: Run) -> tuple:
        return (run.get(Lower),)

    @classmethod
    def compute(cls, run: Run, lowered: Lowered) -> Compiled:
        cfg = run.cfg
        if cfg.board is None:
            return _compile(run, cfg, lowered)
        # On a board: each memory mode to try (one, or the board's with auto), its program
        # placed in the board's regions; the fastest that fits is kept, else the first tried,
        # whose breach the build reports (budgets.py).
        tried = []
        for mode in boards.candidate_modes(cfg):
            mode_cfg = dataclasses.replace(cfg, target=dataclasses.replace(cfg.target, memory_mode=mode))
            compiled = _compile(run, mode_cfg, lowered)
            compiled.fit = placement.place(compiled.memory, cfg.board, mode_cfg.target, mode)
            tried.append(compiled)
        kept = min([c for c in tried if c.fit["fits"]] or tried[:1], key=lambda c: c.metrics["total"]["cycles"])
        # What the board's CPU adds to the NPU's time: an estimate (cpu_cost.py).
        b = cfg.board
        kept.fit["cpu"] = cpu_cost.estimate(kept.pte, b.cpu, b.cpu_clock_hz, kept.metrics["total"]["inference_ms"])
        if len(tried) > 1:
            kept.fit["tried"] = [
                {"memory_mode": c.fit["memory_mode"], "cycles": c.metrics["total"]["cycles"], "fits": c.fit["fits"],
                 "problems": c.fit["problems"]}
                for c in tried
            ]  # fmt: skip
        return kept


def _compile(run: Run, cfg: BuildConfig, lowered: Lowered) -> Compiled:
    """The program for cfg.target: Vela on the shared lowering's partitions."""
    if lowered.info.get("retargetable"):
        pte, metrics, console, files = run_vela(cfg, lowered.template, lowered.tosa)
    else:
        # A program whose serialized form does not round-trip cannot have its payloads
        # swapped: lower it again for this target, with Vela in place.
        log.info("vela: the shared lowering cannot be retargeted; lowering for %s", cfg.target.accelerator)
        pte, info, console, files = run_lower(cfg, run.get(Quantize).program, run_vela=True)
        metrics = info["vela"]
    log.debug("Vela output:\n%s", console)
    return Compiled(pte, files, metrics, memory.bill(pte, cfg.target))


def run_vela(
    cfg: BuildConfig, template: bytes, tosa: list[bytes]
) -> tuple[bytes, dict[str, Any], str, dict[str, bytes]]:
    """Vela on each partition of the shared lowering (its template.pte and one TOSA
    flatbuffer per partition, from run_lower) for cfg.target, filled into the program
    (pte.retarget). Returns (pte, Vela metrics, console, files: Vela's CSVs and the TOSA
    flatbuffers, see vela.collect)."""
    spec = targets.compile_spec(cfg.target)
    console = io.StringIO()
    try:
        # Vela reports on stdout and, through argparse, its refusals on stderr: both go to the log.
        with (
            contextlib.redirect_stdout(console),
            contextlib.redirect_stderr(console),
            tempfile.TemporaryDirectory(prefix="ethosu-vela-") as workdir,
        ):
            parts, payloads = [], {}
            for i, flatbuffer in enumerate(tosa):
                part = Partition(i, Path(workdir) / f"part{i}")
                payloads[placeholder(flatbuffer)] = compile_partition(flatbuffer, spec.compiler_flags, part)
                parts.append(part)
            program = pte.retarget(template, payloads, spec._to_list())
            reports = Path(workdir) / "reports"
            metrics = collect(parts, reports)
            files = {f.name: f.read_bytes() for f in sorted(reports.iterdir())}
    except pte.RetargetError:
        raise
    except SystemExit as exc:
        raise vela_exited(cfg, exc, console.getvalue()) from exc
    except Exception as exc:
        raise lowering_failed(cfg, exc) from exc
    return program, metrics, console.getvalue(), files


# --- its sections of report.md ----------------------------------------------------------

_PARTITION_COLUMNS = ["partition", "cycles", "inference ms", "SRAM KiB", "flash KiB", "DRAM KiB", "scratch bytes",
                      "MACs", "NPU ops"]  # fmt: skip


def _performance_section(v: dict[str, Any]) -> list[str]:
    total = v.get("total", {})
    if not total:
        return []
    rows = [
        [
            p["partition"],
            p["cycles"],
            p["inference_ms"],
            p["sram_kib"],
            p["on_chip_flash_kib"] + p["off_chip_flash_kib"],
            p["dram_kib"],
            p.get("scratch_bytes"),
            p["macs"],
            p["npu_ops"],
        ]
        for p in v["partitions"]
    ]
    rows.append(
        ["**total**"]
        + [total.get(k) for k in ("cycles", "inference_ms", "sram_kib", "flash_kib", "dram_kib", "scratch_bytes")]
        + [total["macs"], total["npu_ops"]]
    )
    return [
        "",
        "## Performance (Vela estimate)",
        "",
        markdown_table(_PARTITION_COLUMNS, rows),
        f"\nClock {total.get('core_clock_hz', 0) / 1e6:g} MHz. Figures of several partitions are summed.",
    ]


def _cycles_section(vela_dir: Path, low: dict[str, Any]) -> list[str]:
    by_op = vela_files.cycles_by_operator(vela_dir)
    if not by_op:
        return []
    kinds: dict[str, float] = {}
    for x in by_op:
        kinds[x["kind"]] = kinds.get(x["kind"], 0.0) + x["pct"]
    out = [
        "",
        "## Where the NPU cycles go",
        "",
        "By operator (Vela's per-layer estimate, all partitions): "
        + ", ".join(f"{k} {v:.1f}%" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
        + ".",
        "",
        markdown_table(
            ["operator", "kind", "layers", "cycles", "% of NPU cycles"],
            [[x["op"], x["kind"], x["layers"], x["cycles"], x["pct"]] for x in by_op],
        ),
    ]
    if kinds.get("layout") and low.get("io_layout", "nchw") == "nchw":
        out.append(
            "\nTransposes convert between PyTorch's NCHW and the NPU's NHWC layout: those at the program's "
            "inputs and outputs go with `lowering.io_layout=nhwc` (or `lowering=fast`; docs/lowering.md); "
            "others (around a reshape or flatten) stay."
        )
    return out


def _top_layers_section(vela_dir: Path) -> list[str]:
    layers = vela_files.top_layers(vela_dir) if (vela_dir / vela_files.PER_LAYER_CSV).is_file() else []
    if not layers:
        return []
    return [
        "",
        "## Top layers by cycles",
        "",
        markdown_table(
            ["partition", "op", "name", "cycles", "% of partition", "MACs"],
            [[x["partition"], x["op"], x["name"], x["cycles"], x["network_pct"], x["macs"]] for x in layers],
        ),
    ]
