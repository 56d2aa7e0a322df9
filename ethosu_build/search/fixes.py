"""Measured fixes for the worst layers of a per-layer diagnosis (pipeline/layers.py), each
priced on the NPU: `ethosu-artifacts layers ID --fixes N` (docs/measurements.md, "Per layer").

For each of the N layers with the largest local error, the fixes the quantizer offers, each a
real build of the artifact's config plus module overrides (the stage cache keeps the export,
and the search's rule holds: measured, never assumed):

- `a16w8`: 16-bit activations where the point is computed and where it is read. Both ends:
  one tensor has one quantization, and the ops that read it take it at their own input's
  precision, so 16 bits at one end alone changes nothing (measured on tests/zoo_models.py
  planted_outlier: the producer alone 29.05 dB, the consumer alone 29.11, both 41.07, from 29.13);
- `float`: the modules that compute the point left in float on the CPU; the NPU partition
  splits around them (said, with the CPU ops and partitions it adds);
- `minmax`: where the point clipped evaluation values and the ranges come from calibration
  (not QAT), the same scheme with a min/max activation observer where the point is computed,
  in place of EthosUQuantizer's histogram observer (the range of least squared error, which may clip):
  nothing clipped, coarser codes. Calibration's other settings (samples, batch size) are
  global, not a layer's fix: they are not offered.

Each fix reports its SQNR (and top-1) gain, Vela's cycles and the memory bill against the
artifact's, and the override to paste.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

from ..config import objective
from ..errors import BudgetBreached, EthosuError, first_line

log = logging.getLogger("ethosu_build.search")

FIXES = {
    "a16w8": "16-bit activations where the point is computed and where it is read",
    "float": "in float on the CPU where the point is computed (the NPU partition splits)",
    "minmax": "a min/max activation observer where the point is computed: nothing clipped",
}


def _figures(m: dict[str, Any]) -> dict[str, Any]:
    acc, d = m["metrics"]["accuracy"], m["delegation"]
    return {
        "sqnr_db": acc["sqnr_db"],
        "top1": acc.get("quantized_top1"),
        "cycles": m["metrics"]["vela"]["total"]["cycles"],
        "sram_kib": objective.METRICS["sram_kib"].read(m),
        "flash_kib": objective.METRICS["flash_kib"].read(m),
        "npu_partitions": d["npu_partitions"],
        "cpu_ops": d["cpu_compute_op_count"],
    }


def _applies(layer: dict[str, Any], fix: str, config: dict[str, Any]) -> bool:
    """minmax only where the histogram observer clipped, and ranges come from calibration."""
    return fix != "minmax" or (layer["clipped"] > 0 and config["quantization"].get("qat") is None)


def _entries(layer: dict[str, Any], fix: str) -> dict[str, dict[str, str]]:
    """The override entries of a fix: the modules where the point is computed, and for a16w8
    those that read it too. The producer's observer alone sets the tensor's range (the reader
    shares it: on tests/zoo_models.py planted_outlier, minmax at b2 alone swaps one observer,
    and at b3.0 too a second one, b3's own output)."""
    modules = layer["computed_in"] + (layer["read_by"] if fix == "a16w8" else [])
    if fix == "minmax":  # the point's own scheme, with another observer
        how = {"scheme": "a16w8" if layer["bits"] == 16 else "int8", "observer": "minmax"}
    else:
        how = {"scheme": fix}
    return {f"fix_{m.replace('.', '_')}": {"module_name": m, **how} for m in dict.fromkeys(modules)}


def override_text(entries: dict[str, dict[str, str]]) -> str:
    """The command-line overrides that add these entries."""
    return " ".join(f"'+overrides.{k}={{{', '.join(f'{f}: {v}' for f, v in e.items())}}}'" for k, e in entries.items())


def measure(m: dict[str, Any], root: Path, diagnosis: dict[str, Any], worst: int = 3) -> dict[str, Any]:
    """Each fix of the `worst` layers with the largest local error, built and compared with the
    artifact (`m`, its manifest). Builds go to the store under `root` as `<name>-fix`
    versions, with the artifact's budgets judged afterwards (a breach marks a fix, it does not
    stop the others)."""
    from ..pipeline import budgets
    from ..pipeline.build import build

    base = _figures(m)
    chosen = [r for r in sorted(diagnosis["layers"], key=lambda r: r["local_sqnr_db"]) if r["computed_in"]][:worst]
    rows = []
    for layer in chosen:
        for fix, what in FIXES.items():
            if not _applies(layer, fix, m["config"]):
                continue
            entries = _entries(layer, fix)
            container = copy.deepcopy(m["config"])
            container.update(name=f"{m['name']}-fix", budget={}, tracking={"backend": "none"})
            container["store"]["root"] = str(root)
            container["overrides"] = {**(container.get("overrides") or {}), **entries}
            row: dict[str, Any] = {"point": layer["point"], "module": layer["module"], "fix": fix, "what": what,
                                   "override": override_text(entries), "entries": entries}  # fmt: skip
            try:
                result = build(container)
            except EthosuError as exc:
                row.update(status="failed", error=first_line(exc))
                rows.append(row)
                continue
            fm = result.artifact.manifest()
            got = _figures(fm)
            row.update(status="ok", artifact=result.artifact.id, **got)
            row["sqnr_gain_db"] = round(got["sqnr_db"] - base["sqnr_db"], 3)
            row["top1_gain"] = (
                None if got["top1"] is None or base["top1"] is None else round(got["top1"] - base["top1"], 3)
            )
            row["cycles_delta"] = got["cycles"] - base["cycles"]
            row["cycles_delta_pct"] = round(100.0 * row["cycles_delta"] / max(base["cycles"], 1), 1)
            row["splits_partition"] = got["npu_partitions"] > base["npu_partitions"]
            try:
                b = m["config"].get("budget") or {}
                budgets.check(
                    _budget(b), fm["delegation"], fm["metrics"]["vela"], fm["metrics"]["accuracy"], fm["memory"]
                )
                row["within_budget"] = True
            except BudgetBreached as exc:
                row["within_budget"] = False
                row["error"] = "; ".join(b.get("message") or f"budget.{b['budget']}" for b in exc.breaches)
            rows.append(row)
            log.info("layers: %s %s at %s: %+.2f dB, %+d cycles", layer["point"], fix, layer["module"],
                     row["sqnr_gain_db"], row["cycles_delta"])  # fmt: skip
    rows.sort(key=lambda r: -(r.get("sqnr_gain_db") or -1e9))
    return {"base": base, "fixes": rows}


def _budget(b: dict[str, Any]):
    from ..config.schema import BudgetConfig
    from ..config.validate import convert

    return convert(BudgetConfig, b, "budget", [])


def best(fixes: dict[str, Any]) -> dict[str, Any] | None:
    """The fix with the largest SQNR gain that built within the artifact's budgets."""
    ok = [r for r in fixes["fixes"] if r.get("status") == "ok" and r.get("within_budget") and r["sqnr_gain_db"] > 0]
    return max(ok, key=lambda r: r["sqnr_gain_db"], default=None)


def markdown(fixes: dict[str, Any]) -> list[str]:
    from ..files import markdown_table

    base = fixes["base"]
    rows = [
        [r["point"], r["module"], r["fix"], r.get("sqnr_db"), r.get("sqnr_gain_db"), r.get("top1_gain"),
         r.get("cycles"), f"{r['cycles_delta_pct']:+}%" if "cycles_delta_pct" in r else "-",
         "yes" if r.get("splits_partition") else "no", r.get("within_budget"), r.get("error") or r["override"]]
        for r in fixes["fixes"]
    ]  # fmt: skip
    return [
        "",
        f"## Fixes, measured (the artifact: SQNR {base['sqnr_db']} dB, {base['cycles']} cycles, "
        f"{base['npu_partitions']} NPU partition(s))",
        "",
        markdown_table(
            [
                "point",
                "module",
                "fix",
                "SQNR dB",
                "gain dB",
                "top-1 gain",
                "cycles",
                "cycles",
                "splits NPU",
                "within budget",
                "override (or why not)",
            ],
            rows,
        ),  # fmt: skip
    ]
