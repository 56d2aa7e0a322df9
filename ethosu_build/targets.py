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
