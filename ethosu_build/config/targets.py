"""Target config -> EthosUCompileSpec, and the facts about targets needed before any import.

Everything except `compile_spec()` works without importing executorch or Vela, so config
validation and cache look-ups stay fast.
"""

from __future__ import annotations

import configparser
import functools
import importlib.util
import os
from pathlib import Path

from .schema import TargetConfig

# ExecuTorch's defaults per family (EthosUCompileSpec._default_system_config_and_memory_mode).
# Repeated here so a config can be validated and keyed without importing executorch;
# tests/test_targets.py checks they still agree with the installed executorch.
FAMILY_DEFAULTS: dict[str, tuple[str, str]] = {
    "ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
    "ethos-u65": ("Ethos_U65_High_End", "Dedicated_Sram_384KB"),
    "ethos-u85": ("Ethos_U85_SYS_DRAM_Mid", "Sram_Only"),
}
DEFAULT_CONFIG_INI = "Arm/vela.ini"

# Flags that ethosu-build (or EthosUCompileSpec) sets from other keys; giving them in
# vela_flags would contradict those keys, so validation points at the right key instead.
RESERVED_VELA_FLAGS: dict[str, str] = {
    "--accelerator-config": "target.accelerator",
    "--system-config": "target.system_config",
    "--memory-mode": "target.memory_mode",
    "--config": "target.config_ini",
    "--optimise": "target.optimise",
    "--arena-cache-size": "target.arena_cache_size",
    "--output-format": "(fixed to raw by the Ethos-U backend)",
    "--output-dir": "(chosen by the backend; a path would end up in the .pte)",
}
ARENA_CACHE_MAX = 1 << 32  # Vela 5.1.0's bound for --arena-cache-size

# The Vela 5.1.0 options a build may pass (ethosu/vela/vela.py main()); Vela's argparse
# would also take any unambiguous abbreviation, so only these names, written in full, are
# accepted. Switches take no value; the others map to (what is accepted, check).
VELA_SWITCHES: tuple[str, ...] = (
    "--force-symmetric-int-weights",
    "--separate-io-regions",
    "--show-cpu-operations",
    "--verbose-all",
    "--verbose-config",
    "--verbose-graph",
    "--verbose-quantization",
    "--verbose-tensor-format",
    "--verbose-schedule",
    "--verbose-allocation",
    "--verbose-high-level-command-stream",
    "--verbose-register-command-stream",
    "--verbose-weights",
    "--verbose-cycle-estimate",
    "--verbose-performance",
)


def _power_of_two_from_16(v: str) -> bool:
    return v.isdigit() and int(v) >= 16 and int(v) & (int(v) - 1) == 0


def _float_in_open(low: float, high: float):
    def check(v: str) -> bool:
        try:
            return low < float(v) < high
        except ValueError:
            return False

    return check


VELA_VALUES: dict[str, tuple[str, object]] = {
    "--tensor-allocator": ("LinearAlloc, Greedy or HillClimb", lambda v: v in ("LinearAlloc", "Greedy", "HillClimb")),
    "--cpu-tensor-alignment": ("a power of two >= 16", _power_of_two_from_16),
    "--cop-format": ("COP1 or COP2", lambda v: v in ("COP1", "COP2")),
    "--experimental-softmax-int16-neg-exp-range": ("a number between 0 and 65535", _float_in_open(0.0, 65535.0)),
}
# Every other option of Vela 5.1.0, and why a build refuses it (tests/test_targets.py checks
# this table against the installed Vela's own parser).
REFUSED_VELA_FLAGS: dict[str, str] = {
    **{flag: f"is set by ethosu-build; use {key} instead" for flag, key in RESERVED_VELA_FLAGS.items()},
    "-h": "prints Vela's help and exits",
    "--help": "prints Vela's help and exits",
    "--version": "prints Vela's version and exits",
    "--api-version": "prints Vela's API version and exits",
    "--supported-ops-report": "writes SUPPORTED_OPS.md into the working directory and exits",
    "--list-config-files": "lists Vela's .ini files and exits",
    "--list-configs": "lists an .ini's sections and exits",
    "--enable-debug-db": "writes a debug database file beside Vela's output",
    "--ignore-ops": "names TFLite operators, and ExecuTorch hands Vela TOSA",
    **{
        flag: "is deprecated in Vela 5.1.0"
        for flag in (
            "--verbose-packing",
            "--verbose-tensor-purpose",
            "--verbose-operators",
            "--verbose-progress",
            "--timing",
            "--show-subgraph-io-summary",
            "--max-block-dependency",
            "--recursion-limit",
            "--hillclimb-max-iterations",
            "--debug-force-legacy-core",
            "--debug-force-regor",
            "--disable-chaining",
            "--disable-fwd",
            "--disable-cascading",
            "--disable-buffering",
            "--disable-ifm-reuse",
        )
    },
}


def vela_flag_issue(flag: str) -> str | None:
    """Why `flag` (one item of target.vela_flags) cannot be passed to Vela, or None."""
    accepted = (
        "accepted: "
        + ", ".join(list(VELA_SWITCHES[:3]) + [f"{f}=..." for f in VELA_VALUES])
        + " or a --verbose-* switch"
    )
    if not flag.startswith("--") or " " in flag:
        return f"{flag!r} is not one Vela option; {accepted}, one option per list item, --name=value"
    name, eq, value = flag.partition("=")
    known = set(VELA_SWITCHES) | set(VELA_VALUES) | set(REFUSED_VELA_FLAGS)
    if name not in known:
        full = [k for k in sorted(known) if k.startswith(name)]
        if len(full) == 1:  # Vela would take it as an abbreviation: say of what
            why = REFUSED_VELA_FLAGS.get(full[0])
            return f"{flag!r} abbreviates {full[0]}, and options are written in full" + (
                f"; {full[0]} {why}" if why else f"; write {full[0]}"
            )
        from ..errors import did_you_mean

        return f"{flag!r} is not a Vela 5.1.0 option{did_you_mean(name, sorted(known))}; {accepted}"
    if name in REFUSED_VELA_FLAGS:
        return f"{flag!r} {REFUSED_VELA_FLAGS[name]}"
    if name in VELA_SWITCHES:
        return f"{flag!r}: {name} takes no value; accepted: {name}" if eq else None
    what, check = VELA_VALUES[name]
    if not eq or not check(value):  # type: ignore[operator]
        return f"{flag!r}: {name} needs a value; accepted: {name}=<{what}>"
    return None


def vela_flags_issue(flags: list[str]) -> str | None:
    """A combination of flags Vela refuses (each flag itself being valid)."""
    if "--separate-io-regions" in flags and "--cop-format=COP2" not in flags:
        return "--separate-io-regions needs --cop-format=COP2 (Vela's rule)"
    return None


def family(accelerator: str) -> str:
    return accelerator.rsplit("-", 1)[0]


def supports_control_flow(accelerator: str) -> bool:
    """Only Ethos-U85's TOSA profile has the control-flow extension (+cf): cond and
    while_loop run on its NPU; U55/U65 have neither NPU support nor a CPU fallback in
    ExecuTorch 1.5.1 (its Arm passes fail on a branch's weights)."""
    return tosa_spec_string(accelerator).endswith("+cf")


def resolved_system_config(t: TargetConfig) -> str:
    return t.system_config or FAMILY_DEFAULTS[family(t.accelerator)][0]


def resolved_memory_mode(t: TargetConfig) -> str:
    return t.memory_mode or FAMILY_DEFAULTS[family(t.accelerator)][1]


def tosa_spec_string(accelerator: str) -> str:
    """The TOSA specification the Ethos-U backend lowers to (EthosUCompileSpec._tosa_spec_for_target).

    The quantizer's annotation passes depend only on this, so it keys the calibration stage:
    targets sharing it share one calibration.
    """
    base = "TOSA-1.0+INT+int16+int4"
    fam = family(accelerator)
    if fam in ("ethos-u55", "ethos-u65"):
        return base + "+u55"
    return base + "+cf"


@functools.lru_cache(maxsize=1)
def vela_config_files_dir() -> Path:
    spec = importlib.util.find_spec("ethosu")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ethos-u-vela is not installed (pip install ethos-u-vela)")
    return Path(list(spec.submodule_search_locations)[0]) / "config_files"


def resolve_config_ini(config_ini: str | None) -> Path:
    """Where Vela will read the .ini from, following Vela's own rule: a two-part relative
    path such as ``Arm/vela.ini`` names a file bundled with Vela, anything else is a path."""
    cfg = config_ini or DEFAULT_CONFIG_INI
    norm = os.path.normpath(cfg)
    parts = norm.split(os.path.sep)
    if len(parts) == 2 and not cfg.startswith((".", os.path.sep, "~")):
        return vela_config_files_dir() / norm
    return Path(os.path.expanduser(cfg))


@functools.lru_cache(maxsize=8)
def _ini_sections(path: str) -> tuple[set[str], set[str]]:
    parser = configparser.ConfigParser(strict=False)
    parser.read(path)
    systems = {s.split(".", 1)[1] for s in parser.sections() if s.startswith("System_Config.")}
    modes = {s.split(".", 1)[1] for s in parser.sections() if s.startswith("Memory_Mode.")}
    return systems, modes


@functools.lru_cache(maxsize=64)
def _ini_section(path: str, name: str) -> tuple[tuple[str, str], ...]:
    parser = configparser.ConfigParser(strict=False)
    parser.read(path)

    def section(name: str, seen: tuple[str, ...] = ()) -> dict[str, str]:
        values = dict(parser[name]) if parser.has_section(name) else {}
        parent = values.pop("inherit", None)
        if parent and parent not in seen:
            return {**section(parent, (*seen, name)), **values}
        return values

    return tuple(section(name).items())


def ini_section(config_ini: str | None, name: str) -> dict[str, str]:
    """A section of the .ini Vela will use, its `inherit=` followed (lower-case keys)."""
    return dict(_ini_section(str(resolve_config_ini(config_ini)), name))


def mode_areas(t: TargetConfig, memory_mode: str | None = None) -> dict[str, str]:
    """Which of Vela's AXI areas ("axi0", "axi1") the memory mode puts the constants (the
    program's weights), the arena (the NPU scratch) and the cache (the fast scratch) on."""
    mode = ini_section(t.config_ini, f"Memory_Mode.{memory_mode or resolved_memory_mode(t)}")
    return {area: mode.get(f"{area}_mem_area", "Axi0").lower() for area in ("const", "arena", "cache")}


def arena_cache_size(t: TargetConfig, memory_mode: str | None = None) -> int:
    """The fast scratch Vela compiles for: target.arena_cache_size, else the memory mode's; 0 if neither."""
    mode = ini_section(t.config_ini, f"Memory_Mode.{memory_mode or resolved_memory_mode(t)}")
    return t.arena_cache_size or int(mode.get("arena_cache_size", 0) or 0)


def ini_choices(config_ini: str | None) -> tuple[set[str], set[str]]:
    """(system configs, memory modes) defined in the .ini Vela will use."""
    return _ini_sections(str(resolve_config_ini(config_ini)))


def vela_flags(t: TargetConfig) -> list[str]:
    """The Vela flags the target's typed settings stand for, then the free-form vela_flags."""
    flags = [f"--optimise={t.optimise}"] if t.optimise else []
    if t.arena_cache_size is not None:
        flags.append(f"--arena-cache-size={t.arena_cache_size}")
    return flags + list(t.vela_flags)


def compile_spec(t: TargetConfig):
    """Build the EthosUCompileSpec (imports executorch)."""
    from executorch.backends.arm.ethosu import EthosUCompileSpec

    return EthosUCompileSpec(
        t.accelerator,
        system_config=resolved_system_config(t),
        memory_mode=resolved_memory_mode(t),
        extra_flags=vela_flags(t),  # embedded in the .pte, like every flag
        config_ini=t.config_ini or DEFAULT_CONFIG_INI,
    )
