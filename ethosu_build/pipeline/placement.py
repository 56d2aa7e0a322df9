"""Fit, region by region: the pools a program needs (memory.pools) placed in a board's memory
regions (board=NAME) under a memory mode, and each region's use and headroom.

The rules follow what the runtime does (docs/boards.md):
- the NPU reads the weights in place from the .pte, so the program sits in a region on the
  AXI port of the memory mode's const area (a flash or MRAM region will do: it is only read);
- the temp pool (the NPU scratch) sits on the arena's port, the fast scratch (Dedicated_Sram)
  on the cache's, both in writable regions;
- the method pool (the planned buffers and Method::init's allocations) and unplanned IO are the
  CPU's: any writable region.

The NPU's pools are placed first (they have the fewest choices: the fast scratch, the
scratch, then the program), then the CPU's, each in the first region in the board's order
with room for it after what the firmware reserves there. A pool that fits nowhere makes the
build not fit: it names the pool, the region that came closest and the bytes over.
"""

from __future__ import annotations

from typing import Any

from ..config import targets
from ..config.boards import writable
from ..config.schema import NPU_PORTS, BoardConfig, TargetConfig
from ..files import markdown_table
from .memory import POOL_AREAS, POOL_SECTIONS, pools, round16

VERSION = 2  # of the placement rules: part of a board build's vela key (vela.py)

# The region kinds of the memory Vela's system config puts on an AXI port (axiN_port): where
# a pool sits in one of these, Vela's cycle estimate assumed its speed.
ESTIMATED_AS = {
    "Sram": ("sram", "tcm"),
    "Dram": ("ddr",),
    "OffChipFlash": ("flash", "mram"),
    "OnChipFlash": ("flash", "mram"),
}
ORDER = ("fast_scratch", "temp_pool", "pte", "method_pool", "io")
WHAT = {
    "pte": "model.pte (weights and command streams)",
    "method_pool": "method allocator pool (planned buffers, method)",
    "temp_pool": "temp allocator pool (NPU scratch)",
    "fast_scratch": "NPU fast scratch",
    "io": "input and output buffers",
}


def place(bill: dict[str, Any], board: BoardConfig, target: TargetConfig, memory_mode: str) -> dict[str, Any]:
    """Where each pool of the memory `bill` goes on `board` under `memory_mode`, each region's
    use and headroom, and what does not fit (`problems`)."""
    areas = targets.mode_areas(target, memory_mode)
    system = targets.ini_section(target.config_ini, f"System_Config.{targets.resolved_system_config(target)}")
    estimated = {port: ESTIMATED_AS.get(system.get(f"{port}_port", "Sram"), ()) for port in NPU_PORTS}
    # A reserve ends on a 16-byte boundary, where board.ld's first ALIGN(16) pool section starts.
    reserve = {name: round16(sum(r.reserved.values())) for name, r in board.regions.items()}
    free = {name: r.size - reserve[name] for name, r in board.regions.items()}
    placed: dict[str, list[str]] = {name: [] for name in board.regions}
    sizes = pools(bill)
    rows, problems, over = [], [], 0
    for pool in (p for p in ORDER if p in sizes):
        n, area = sizes[pool], POOL_AREAS[pool]
        port = areas[area] if area else None
        fits_in = [
            name
            for name, r in board.regions.items()
            if (port is None or port in r.npu_ports) and (pool == "pte" or writable(r))
        ]
        # Where Vela's estimate holds first: a region of the memory the system config puts on the port.
        fits_in.sort(key=lambda name: board.regions[name].kind not in estimated.get(port, ()))
        region = next((name for name in fits_in if free[name] >= n), None)
        if region is not None:
            free[region] -= n
            placed[region].append(pool)
        closest = None
        if region is None:  # it counts in the region that came closest, as a linker would overflow it
            closest = max(fits_in, key=lambda name: free[name]) if fits_in else None
            problem, by = _problem(pool, n, port, closest, free, board)
            problems.append(problem)
            over += by
            if closest is not None:
                free[closest] -= n
                placed[closest].append(pool)
        as_estimated = None if port is None or region is None else board.regions[region].kind in estimated[port]
        rows.append({"pool": pool, "bytes": n, "section": POOL_SECTIONS[pool], "port": port, "region": region,
                     "closest": closest, "as_estimated": as_estimated})  # fmt: skip
    return {
        "board": board.name,
        "memory_mode": memory_mode,
        "fits": not problems,
        "over": over,  # bytes the pools that fit nowhere lack, summed (0: fits)
        "pools": rows,
        "regions": [
            {
                "name": name,
                "kind": r.kind,
                "size": r.size,
                "cpu_address": r.cpu_address,
                "reserved": reserve[name],
                "pools": placed[name],
                "used": r.size - free[name],
                "headroom": free[name],
            }
            for name, r in board.regions.items()
        ],
        "problems": problems,
    }


def _problem(pool: str, n: int, port: str | None, best: str | None, free: dict[str, int], board) -> tuple[str, int]:
    """Why `pool` fits nowhere, and by how many bytes it misses `best`, the region that came closest."""
    what = f"{WHAT[pool]}, {n:,} B"
    if best is None:
        where = f"on {port}" if port else "writable"
        return f"{what}: no region of the board is {where}", n
    left, which = max(free[best], 0), f"region on {port}" if port else "writable region"
    return (
        f"{what}: over by {n - left:,} B in {best} (the largest {which}: {board.regions[best].size:,} B, {left:,} B "
        "left after the firmware's reserve and the pools placed first)"
    ), n - left


# --- in report.md ---------------------------------------------------------------------


def report_section(fit: dict[str, Any] | None) -> list[str]:
    if not fit:
        return []
    verdict = "fits" if fit["fits"] else "**does not fit**"
    out = ["", f"## Board: {fit['board']} ({fit['memory_mode']}): {verdict}", ""]
    rows = [
        [
            r["name"],
            r["kind"],
            f"{r['cpu_address']:#010x}",
            f"{r['size']:,}",
            f"{r['reserved']:,}",
            ", ".join(r["pools"]) or "-",
            f"{r['used']:,}",
            f"{r['headroom']:,}",
        ]
        for r in fit["regions"]
    ]
    out.append(
        markdown_table(["region", "kind", "address", "size", "firmware reserve", "pools", "used", "headroom"], rows)
    )
    pools = [[WHAT[p["pool"]], f"`{p['section']}`", f"{p['bytes']:,}", p["port"] or "-", p["region"] or "**none**"]
             for p in fit["pools"]]  # fmt: skip
    out += ["", markdown_table(["pool", "section", "bytes", "NPU port", "region"], pools)]
    out += [f"- {p}" for p in ([""] if fit["problems"] else []) + fit["problems"] if p]
    off = [p for p in fit["pools"] if p.get("as_estimated") is False]
    if off:
        where = ", ".join(f"{WHAT[p['pool']]} ({p['region']})" for p in off)
        out += ["", f"Vela's estimate assumed the system config's memory on the port of {where}: no region of that "
                "memory had room, so the board's speed there differs from the estimate."]  # fmt: skip
    tried = fit.get("tried")
    if tried:
        out += ["", "Memory modes tried (board.memory_mode auto), the fastest that fits kept:", ""]
        out.append(
            markdown_table(
                ["memory mode", "cycles", "fits", "why not"],
                [[t["memory_mode"], t["cycles"], t["fits"], "; ".join(t["problems"]) or "-"] for t in tried],
            )
        )
    return out
