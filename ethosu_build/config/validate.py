"""Config checks that need no heavy import: every problem is collected, then reported at once.

`validate(container)` turns a resolved config (plain dicts/lists) into a typed
`schema.BuildConfig` or raises `ConfigError` listing each bad key, its value and what is
accepted. `convert` does the typed part for any schema dataclass (the search's too). Checks
that need the model itself (module names, input shape, dataset sizes) run later, in
`pipeline/model_checks.py`, still before any build stage takes a lock.
"""

from __future__ import annotations

import configparser
import dataclasses
import importlib.util
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from .. import data
from ..data import preprocess
from ..errors import ConfigError, ConfigIssue, accepted, did_you_mean, first_line
from . import boards, objective, quantization, targets
from .hydra_errors import RECIPE_HINT
from .schema import (
    DOTTED,
    NAME,
    NAME_MAX,
    SEARCH_SCHEMES,
    TRACKING_BACKENDS,
    BuildConfig,
    SearchConfig,
    choice,
    type_name,
)

INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1
_HEX = re.compile(r"0[xX][0-9a-fA-F]+")  # Hydra's grammar reads 0x400000 as text; YAML files read it as a number


def validate(container: dict[str, Any], default_name: str | None = None) -> BuildConfig:
    """`default_name` names the artifact when `name` is null (the recipe); else model.name.
    Every issue is reported at once: a key of the wrong type keeps its default for the
    value checks, which then report the other keys (and nothing more about that one)."""
    issues: list[ConfigIssue] = []
    cfg = convert(BuildConfig, container, "", issues)
    if cfg.name is None:
        cfg.name = default_name or cfg.model.name
    found: list[ConfigIssue] = []
    _check_values(cfg, found)
    issues += [v for v in found if not any(_related(v.key, t.key) for t in issues)]
    if issues:
        raise ConfigError(issues)
    return cfg


def _related(a: str, b: str) -> bool:
    """One dotted key is the other or lies under it."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


# --- structure and types, driven by the dataclasses in schema.py -----------------------------


def convert(tp: Any, value: Any, key: str, issues: list[ConfigIssue]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return convert(args[0], value, key, issues)
    if dataclasses.is_dataclass(tp):
        return __convert_dataclass(tp, value, key, issues)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            issues.append(ConfigIssue(key, f"{value!r} is not a list; accepted: {type_name(tp)}"))
            return []
        (item_tp,) = typing.get_args(tp)
        return [convert(item_tp, v, f"{key}.{i}", issues) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            issues.append(ConfigIssue(key, f"{value!r} is not a mapping; accepted: {type_name(tp)}"))
            return {}
        _, val_tp = typing.get_args(tp)
        if val_tp is Any:
            return dict(value)
        return {k: convert(val_tp, v, f"{key}.{k}", issues) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        value = (
            int(value, 16) if isinstance(value, str) and _HEX.fullmatch(value) else value
        )  # 0x.. on the command line
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT_MIN <= value <= INT_MAX:  # torch, Vela and the file formats take 64-bit integers
                issues.append(ConfigIssue(key, f"{value!r} is out of range; accepted: an integer of at most 64 bits"))
                return None
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                issues.append(
                    ConfigIssue(key, f"{value!r} is not a finite number; accepted: {type_name(tp)}, not nan or inf")
                )
                return None
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)):  # Hydra reads name=2024 as a number: say how to keep it text
            spelled = str(value).lower() if isinstance(value, bool) else str(value)
            kind = "true or false" if isinstance(value, bool) else "a number"
            issues.append(
                ConfigIssue(
                    key,
                    f"{value!r} is not a string (the command line reads {spelled} as {kind}); "
                    f"accepted: a string: quote it, '{key}=\"{spelled}\"'",
                )
            )
            return None
    issues.append(ConfigIssue(key, f"{value!r} is not {type_name(tp)}"))
    return None


def __convert_dataclass(tp: type, value: Any, key: str, issues: list[ConfigIssue]) -> Any:
    where = key or "the config"
    if value is None:
        value = {}
    if not isinstance(value, dict):
        issues.append(ConfigIssue(where, f"{value!r} is not a mapping of {tp.__name__} keys"))
        return tp()
    hints = typing.get_type_hints(tp)
    names = [f.name for f in dataclasses.fields(tp)]
    for k in value:
        if k not in names:
            sub = f"{key}.{k}" if key else str(k)
            issues.append(
                ConfigIssue(
                    sub,
                    f"unknown key; accepted keys{' under ' + key if key else ''}: "
                    f"{', '.join(names)}{did_you_mean(str(k), names)}"
                    + (RECIPE_HINT if tp is BuildConfig and k == "recipe" else ""),
                )
            )
    kwargs = {}
    for name in names:
        if name in value:
            before = len(issues)
            converted = convert(hints[name], value[name], f"{key}.{name}" if key else name, issues)
            # A scalar or list of the wrong type keeps its default (see validate); a mapping
            # keeps what converted, its bad parts at their defaults.
            if len(issues) == before or dataclasses.is_dataclass(converted) or isinstance(converted, dict):
                kwargs[name] = converted
    return tp(**kwargs)


# --- values ---------------------------------------------------------------------------------


def _check_values(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    issues.extend(objective.parse(cfg.objective)[1])
    _check_tracking(cfg, issues)
    if cfg.name is not None and (not NAME.match(cfg.name) or len(cfg.name) > NAME_MAX):
        issues.append(
            ConfigIssue(
                "name",
                f"{cfg.name!r} cannot name an artifact folder; accepted: up to {NAME_MAX} letters, digits, "
                "'_', '-', '.', starting with a letter or digit",
            )
        )
    problem = store_root_issue(cfg.store.root)
    if problem:
        issues.append(ConfigIssue("store.root", problem))
    else:
        cfg.store.root = os.path.expanduser(cfg.store.root)
    _check_model(cfg, issues)
    _check_target(cfg, issues)
    boards.check(cfg, issues)
    _check_lowering(cfg, issues)
    quantization.check(cfg, issues)
    for key, ds in (("calibration", cfg.calibration), ("evaluation", cfg.evaluation)):
        issues += data.dataset_issues(key, ds.dataset, ds.num_samples, ds.batch_size, ds.seed, cfg.model.preprocess)
    if cfg.evaluation.tosa_samples <= 0:
        issues.append(
            ConfigIssue(
                "evaluation.tosa_samples", f"{cfg.evaluation.tosa_samples} is not positive; accepted: an integer >= 1"
            )
        )
    for f in dataclasses.fields(cfg.budget):
        limit = getattr(cfg.budget, f.name)
        if limit is not None and limit < 0:
            issues.append(ConfigIssue(f"budget.{f.name}", f"{limit!r} is negative; accepted: null or a number >= 0"))


def _check_tracking(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    t = cfg.tracking
    if t.backend not in TRACKING_BACKENDS:
        issues.append(
            ConfigIssue("tracking.backend", f"{t.backend!r} is not a tracker; accepted: {', '.join(TRACKING_BACKENDS)}")
        )
    elif t.backend == "mlflow" and importlib.util.find_spec("mlflow") is None:
        issues.append(
            ConfigIssue(
                "tracking",
                "mlflow is not installed; accepted: tracking=none, or install the extra: pip install -e "
                "'.[tracking]' (pip install 'ethosu-build[tracking]')",
            )
        )
    if t.experiment is not None and not t.experiment.strip():
        issues.append(ConfigIssue("tracking.experiment", "is empty; accepted: null or an experiment name"))


def _check_model(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    m = cfg.model
    target = m.factory.get("_target_")
    if not isinstance(target, str) or not DOTTED.match(target):
        issues.append(
            ConfigIssue(
                "model.factory._target_",
                f"{target!r} is not a dotted path to a callable; accepted: e.g. ethosu_build.models.digits_cnn or "
                "mypkg.models.build",
            )
        )
    if m.checkpoint is not None and not Path(m.checkpoint).is_file():
        issues.append(
            ConfigIssue(
                "model.checkpoint",
                f"file {m.checkpoint!r} does not exist; accepted: null or an existing state_dict file (torch.save)",
            )
        )
    _check_inputs(m, issues)
    first = m.input_specs()[0]
    if m.preprocess and not any(i.key.startswith(("model.inputs", "model.input_shape")) for i in issues):
        if first.dtype != "float32":
            issues.append(
                ConfigIssue(
                    "model.preprocess",
                    f"the first input {first.name!r} is {first.dtype}; accepted: steps for a float32 first input",
                )
            )
        else:
            issues.extend(preprocess.issues(m.preprocess, "model.preprocess", first.shape))


def _check_inputs(m, issues: list[ConfigIssue]) -> None:
    if m.inputs and m.input_shape:
        issues.append(
            ConfigIssue(
                "model.inputs",
                f"given together with model.input_shape={m.input_shape!r}; accepted: one of them (set "
                "model.input_shape=null to describe the inputs with model.inputs)",
            )
        )
        return
    if not m.inputs:
        _check_shape(m.input_shape, "model.input_shape", issues)
        return
    seen: set[str] = set()
    for i, spec in enumerate(m.inputs):
        key = f"model.inputs.{i}"
        if not spec.name or not spec.name.isidentifier() or spec.name in seen:
            why = "is given twice" if spec.name in seen else "is not a name"
            issues.append(ConfigIssue(f"{key}.name", f"{spec.name!r} {why}; accepted: a unique identifier, e.g. mask"))
        seen.add(spec.name)
        _check_shape(spec.shape, f"{key}.shape", issues, f" (input {spec.name!r})")
        choice(issues, f"{key}.dtype", spec.dtype, "model.inputs.*.dtype")
    if not any(s.dtype == "float32" for s in m.inputs):
        issues.append(
            ConfigIssue(
                "model.inputs",
                f"no input is float32 ({', '.join(f'{s.name}: {s.dtype}' for s in m.inputs)}); accepted: at least one "
                "float32 input, the tensor the quantizer quantizes at the program's boundary",
            )
        )


def _check_shape(shape: list[int] | None, key: str, issues: list[ConfigIssue], which: str = "") -> None:
    if not shape or any(d is None or d <= 0 for d in shape):
        issues.append(
            ConfigIssue(
                key,
                f"{shape!r}{which} is not a shape; accepted: a list of positive integers, batch first, e.g. "
                "[1, 3, 32, 32]",
            )
        )
    elif shape[0] != 1:
        issues.append(
            ConfigIssue(
                key,
                f"{shape!r}{which} has batch {shape[0]}; accepted: batch 1 (the deployed program runs one sample at a "
                "time)",
            )
        )


def _check_target(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    t = cfg.target
    if not choice(issues, "target.accelerator", t.accelerator):
        return
    choice(issues, "target.cpu_qdq_kernels", t.cpu_qdq_kernels)
    choice(issues, "target.optimise", t.optimise)
    if t.arena_cache_size is not None and not 0 < t.arena_cache_size <= targets.ARENA_CACHE_MAX:
        issues.append(
            ConfigIssue(
                "target.arena_cache_size",
                f"{t.arena_cache_size!r} is not a size Vela takes; accepted: null (the memory mode's) "
                f"or a number of bytes from 1 to {targets.ARENA_CACHE_MAX}",
            )
        )
    for key in ("system_config", "memory_mode", "config_ini"):
        if getattr(t, key) is not None and not getattr(t, key).strip():
            issues.append(
                ConfigIssue(
                    f"target.{key}",
                    f"{getattr(t, key)!r} is empty; accepted: null (ExecuTorch's default) or a name"
                    + (" from the .ini" if key != "config_ini" else " of a Vela .ini file"),
                )
            )
            return
    for i, flag in enumerate(t.vela_flags):
        problem = targets.vela_flag_issue(flag)
        if problem:
            issues.append(ConfigIssue(f"target.vela_flags.{i}", problem))
    combination = targets.vela_flags_issue(targets.vela_flags(t))
    if combination:
        issues.append(ConfigIssue("target.vela_flags", combination))
    ini = targets.resolve_config_ini(t.config_ini)
    if t.config_ini is not None and (not ini.is_file() or ini.suffix != ".ini"):
        issues.append(
            ConfigIssue(
                "target.config_ini",
                f"{t.config_ini!r} is not an existing .ini file; accepted: null (Vela's Arm/vela.ini) or a path to a "
                "Vela .ini (use ./ for a file in the current folder)",
            )
        )
        return
    try:
        systems, modes = targets.ini_choices(t.config_ini)
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        issues.append(
            ConfigIssue(
                "target.config_ini",
                f"{t.config_ini!r} is not a readable Vela .ini ({type(exc).__name__}: {first_line(exc)}); "
                "accepted: null (Vela's Arm/vela.ini) or an .ini file in Vela's format",
            )
        )
        return
    if targets.resolved_system_config(t) not in systems:
        issues.append(
            ConfigIssue(
                "target.system_config",
                f"{t.system_config!r} is not in {ini.name}; {accepted(sorted(systems), t.system_config)}",
            )
        )
    if t.memory_mode != boards.AUTO and targets.resolved_memory_mode(t) not in modes:  # auto: boards.py checks each
        issues.append(
            ConfigIssue(
                "target.memory_mode",
                f"{t.memory_mode!r} is not in {ini.name}; {accepted(sorted(modes), t.memory_mode)}",
            )
        )


def _check_lowering(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    low = cfg.lowering
    if choice(issues, "lowering.io_layout", low.io_layout) and low.io_layout == "nhwc":
        for spec in cfg.model.input_specs():
            if spec.dtype == "float32" and len(spec.shape) != 4:
                issues.append(
                    ConfigIssue(
                        "lowering.io_layout",
                        f"'nhwc' needs a 4-D model input, but input {spec.name!r} has shape {spec.shape!r}; "
                        "accepted: nchw for this model",
                    )
                )
    for i, name in enumerate(low.rewrites):
        if choice(issues, f"lowering.rewrites.{i}", name, "lowering.rewrites.*") and name in low.rewrites[:i]:
            issues.append(
                ConfigIssue(f"lowering.rewrites.{i}", f"{name!r} is listed twice; accepted: each rewrite once")
            )


def store_root_issue(root: Any) -> str | None:
    """Why `root` cannot be the store's folder (None: it can). `~` means the home folder.
    Nothing is created here: the folder's nearest existing parent must let us create it."""
    accepted = "accepted: a folder path, e.g. outputs or /shared/ethosu"
    if not isinstance(root, str) or not root.strip():
        return f"{root!r} is not a folder; {accepted}"
    path = Path(os.path.expanduser(root))
    if path.exists() and not path.is_dir():
        return f"{root!r} is a file, not a folder; {accepted}"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{root!r} cannot be created: {str(existing)!r} is a file; {accepted}"
    if not os.access(existing, os.W_OK | os.X_OK):
        verb = "written" if existing == path else "created"
        return f"{root!r} cannot be {verb}: no write permission on {str(existing)!r}; {accepted}"
    return None


def search_config(raw: Any) -> SearchConfig:
    issues: list[ConfigIssue] = []
    s = convert(SearchConfig, raw, "search", issues)
    if not issues:
        if s.scheme not in SEARCH_SCHEMES:
            issues.append(
                ConfigIssue("search.scheme", f"{s.scheme!r} is not supported; {accepted(SEARCH_SCHEMES, s.scheme)}")
            )
        for key, value, low in (("depth", s.depth, 1), ("front", s.front, 1), ("trials", s.trials, 0)):
            if value is not None and value < low:
                issues.append(ConfigIssue(f"search.{key}", f"{value} is too small; accepted: an integer >= {low}"))
    if issues:
        raise ConfigError(issues)
    return s
