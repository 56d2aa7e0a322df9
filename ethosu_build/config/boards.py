"""Boards (board=NAME, conf/board/*.yaml): the checks of a board's description, and the facts
the build takes from it. Imports nothing heavy.

A board names its NPU (target.accelerator must be it), its CPU, the memory modes its
firmware supports and its memory regions. Every problem is reported at once, naming the key:
a region that overlaps another, reserves more than it holds, or a memory mode that puts the
NPU's data on an AXI port no region answers on.
"""

from __future__ import annotations

from ..errors import ConfigIssue, accepted
from . import targets
from .schema import (
    AUTO,
    CPUS,
    NPU_PORTS,
    READ_ONLY_KINDS,
    REGION_KINDS,
    TARGETS,
    BoardConfig,
    BuildConfig,
    RegionConfig,
)

ADDRESS_LIMIT = 1 << 32  # a 32-bit Cortex-M's address space
# What the NPU reads and writes under a memory mode, by Vela's area (targets.mode_areas): the
# program's constants (read in place from the .pte), its scratch and its fast scratch.
NPU_AREAS = {"const": "the program's weights (read in place from the .pte)", "arena": "the NPU scratch",
             "cache": "the fast scratch"}  # fmt: skip


def candidate_modes(cfg: BuildConfig) -> list[str]:
    """The memory modes a build tries: board.memory_modes with target.memory_mode auto, else
    the one target.memory_mode."""
    t = cfg.target
    if t.memory_mode == AUTO:
        return list(cfg.board.memory_modes) if cfg.board else []
    return [targets.resolved_memory_mode(t)]


def check(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    """Every problem of cfg.board, and of the target against it, appended to `issues`."""
    b, t = cfg.board, cfg.target
    if b is None:
        if t.memory_mode == AUTO:
            issues.append(
                ConfigIssue(
                    "target.memory_mode",
                    "'auto' chooses among a board's memory modes, and no board is set; accepted: a memory mode of "
                    "the .ini, or a board (board=NAME) with board.memory_mode=auto",
                )
            )
        return
    if b.npu not in TARGETS:
        issues.append(
            ConfigIssue("board.npu", f"{b.npu!r} is not an Ethos-U configuration; {accepted(TARGETS, b.npu)}")
        )
        return
    if b.npu != t.accelerator:
        issues.append(
            ConfigIssue(
                "target.accelerator",
                f"{t.accelerator!r} contradicts board={b.name} (board.npu: {b.npu!r}); accepted: target={b.npu} "
                "(the board's NPU), or another board",
            )
        )
        return  # the board's modes and regions are checked against its own NPU
    if b.cpu not in CPUS:
        issues.append(ConfigIssue("board.cpu", f"{b.cpu!r} is not supported; {accepted(CPUS, b.cpu)}"))
    if b.cpu_clock_hz <= 0:
        issues.append(ConfigIssue("board.cpu_clock_hz", f"{b.cpu_clock_hz!r} is not a clock; accepted: Hz above 0"))
    _check_modes(cfg, issues)
    _check_regions(b, issues)
    if not any(i.key.startswith(("board.regions", "board.memory_modes")) for i in issues):
        _check_reach(cfg, issues)


def _check_modes(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    b, t = cfg.board, cfg.target
    try:
        _, modes = targets.ini_choices(t.config_ini)
    except Exception:  # noqa: BLE001  (an unreadable .ini is target.config_ini's issue)
        return
    if not b.memory_modes:
        issues.append(ConfigIssue("board.memory_modes", "is empty; accepted: the memory modes the board supports"))
    for i, mode in enumerate(b.memory_modes):
        if mode not in modes:
            issues.append(
                ConfigIssue(f"board.memory_modes.{i}", f"{mode!r} is not in the .ini; {accepted(sorted(modes), mode)}")
            )
        elif mode.startswith("Dedicated_Sram") and targets.family(t.accelerator) == "ethos-u55":
            issues.append(
                ConfigIssue(
                    f"board.memory_modes.{i}",
                    f"{mode!r}: an Ethos-U55 has no dedicated SRAM mode; accepted: Shared_Sram, Sram_Only",
                )
            )
        elif mode.startswith("Dedicated_Sram") and not targets.arena_cache_size(t, mode):
            issues.append(
                ConfigIssue(
                    "target.arena_cache_size",
                    f"is null, and {mode!r} sets no arena cache: Vela would compile for an unbounded fast scratch; "
                    "accepted: the bytes of SRAM the board's firmware gives the NPU as its fast scratch",
                )
            )
    allowed = [*b.memory_modes, AUTO]
    if b.memory_mode not in allowed:
        issues.append(
            ConfigIssue(
                "board.memory_mode", f"{b.memory_mode!r} is not one of the board's; {accepted(allowed, b.memory_mode)}"
            )
        )
    elif t.memory_mode not in allowed:
        issues.append(
            ConfigIssue(
                "target.memory_mode",
                f"{t.memory_mode!r} contradicts board={b.name}, whose firmware supports {b.memory_modes}; "
                f"{accepted(allowed, t.memory_mode)}",
            )
        )


def _check_regions(b: BoardConfig, issues: list[ConfigIssue]) -> None:
    if not b.regions:
        issues.append(ConfigIssue("board.regions", "is empty; accepted: the board's memory regions, by name"))
    spans = []
    for name, r in b.regions.items():
        key = f"board.regions.{name}"
        if r.kind not in REGION_KINDS:
            issues.append(ConfigIssue(f"{key}.kind", f"{r.kind!r} is not supported; {accepted(REGION_KINDS, r.kind)}"))
        if not 0 < r.size <= ADDRESS_LIMIT:
            issues.append(ConfigIssue(f"{key}.size", f"{r.size!r} is not a size; accepted: bytes from 1 to 4 GiB"))
            continue
        for field, address in (("cpu_address", r.cpu_address), ("npu_address", r.npu_address)):
            if address is not None and not 0 <= address <= ADDRESS_LIMIT - r.size:
                issues.append(
                    ConfigIssue(f"{key}.{field}", f"{address:#x} + size {r.size:#x} runs past the 32-bit address space")
                )
        for i, port in enumerate(r.npu_ports):
            if port not in NPU_PORTS:
                issues.append(
                    ConfigIssue(f"{key}.npu_ports.{i}", f"{port!r} is not supported; {accepted(NPU_PORTS, port)}")
                )
        bad = {k: v for k, v in r.reserved.items() if not isinstance(v, int) or v < 0}
        if bad:
            issues.append(ConfigIssue(f"{key}.reserved", f"{bad} are not sizes; accepted: bytes, 0 or more"))
        elif sum(r.reserved.values()) > r.size:
            issues.append(
                ConfigIssue(
                    f"{key}.reserved",
                    f"{sum(r.reserved.values()):,} B reserved ({r.reserved}) is more than the region's {r.size:,} B; "
                    "accepted: at most its size",
                )
            )
        spans.append((r.cpu_address, r.cpu_address + r.size, name))
    spans.sort()
    for (a0, a1, first), (b0, _, second) in zip(spans, spans[1:]):
        if b0 < a1:
            issues.append(
                ConfigIssue(
                    f"board.regions.{second}.cpu_address",
                    f"{b0:#x} lies inside region {first} ({a0:#x}-{a1 - 1:#x}); accepted: regions that do not overlap",
                )
            )


def _check_reach(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    """Every memory mode the board supports puts the NPU's data on ports some region answers on."""
    b = cfg.board
    for i, mode in enumerate(b.memory_modes):
        areas = targets.mode_areas(cfg.target, mode)
        for area, what in NPU_AREAS.items():
            if area == "cache" and areas["cache"] == areas["arena"]:
                continue  # no separate fast scratch in this mode
            port = areas[area]
            reach = [n for n, r in b.regions.items() if port in r.npu_ports and (area == "const" or writable(r))]
            if not reach:
                issues.append(
                    ConfigIssue(
                        f"board.memory_modes.{i}",
                        f"{mode!r} puts {what} on {port}, and no {'' if area == 'const' else 'writable '}region of "
                        f"board.regions lists {port} in its npu_ports; accepted: a mode whose areas the board's "
                        "regions reach, or regions that say which ports reach them",
                    )
                )


def writable(r: RegionConfig) -> bool:
    return r.kind not in READ_ONLY_KINDS


def describe(b: BoardConfig) -> dict:
    """The board as the vela stage's key holds it: everything but its sources (documentation)."""
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(b).items() if k != "sources"}
