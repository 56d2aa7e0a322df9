"""Config checks that need no heavy import: every problem is collected, then reported at once.

`validate(container)` turns a resolved config (plain dicts/lists) into a typed
`schema.BuildConfig` or raises `ConfigError` listing each bad key, its value and what is
accepted. Checks that need the model itself (module names, input shape, dataset sizes) run
later, in `model_checks.py`, still before any build stage.
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Optional

from . import data, targets
from .errors import ConfigError, ConfigIssue, accepted, did_you_mean
from .store import NAME, NAME_MAX
from .schema import CHOICES, QAT_ONLY_SCHEMES, BuildConfig, DatasetConfig, OverrideEntry, QatConfig

_DOTTED = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


def validate(container: dict[str, Any], default_name: Optional[str] = None) -> BuildConfig:
    """`default_name` names the artifact when `name` is null (the recipe); else model.name."""
    issues: list[ConfigIssue] = []
    cfg = _convert(BuildConfig, container, "", issues)
    if not issues:
        if cfg.name is None:
            cfg.name = default_name or cfg.model.name
        _check_values(cfg, issues)
    if issues:
        raise ConfigError(issues)
    return cfg


# --- structure and types, driven by the dataclasses in schema.py -----------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _convert(tp: Any, value: Any, key: str, issues: list[ConfigIssue]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, key, issues)
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, key, issues)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            issues.append(ConfigIssue(key, f"{value!r} is not a list; accepted: {_type_name(tp)}"))
            return []
        (item_tp,) = typing.get_args(tp)
        return [_convert(item_tp, v, f"{key}.{i}", issues) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            issues.append(ConfigIssue(key, f"{value!r} is not a mapping; accepted: {_type_name(tp)}"))
            return {}
        _, val_tp = typing.get_args(tp)
        if val_tp is Any:
            return dict(value)
        return {k: _convert(val_tp, v, f"{key}.{k}", issues) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT_MIN <= value <= INT_MAX:  # torch, Vela and the file formats take 64-bit integers
                issues.append(ConfigIssue(key, f"{value!r} is out of range; accepted: an integer of at most 64 bits"))
                return None
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                issues.append(ConfigIssue(key, f"{value!r} is not a finite number; accepted: {_type_name(tp)}, not nan or inf"))
                return None
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    issues.append(ConfigIssue(key, f"{value!r} is not {_type_name(tp)}"))
    return None


def _convert_dataclass(tp: type, value: Any, key: str, issues: list[ConfigIssue]) -> Any:
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
            issues.append(ConfigIssue(sub, f"unknown key; accepted keys{' under ' + key if key else ''}: {', '.join(names)}{did_you_mean(str(k), names)}"))
    kwargs = {}
    for name in names:
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], f"{key}.{name}" if key else name, issues)
    return tp(**kwargs)


# --- values ---------------------------------------------------------------------------------


def _choice(issues: list[ConfigIssue], key: str, value: Any, choices_key: str | None = None) -> bool:
    choices = CHOICES[choices_key or key]
    if value not in choices:
        issues.append(ConfigIssue(key, f"{value!r} is not supported; {accepted(choices, value)}"))
        return False
    return True


def _check_values(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    if cfg.name is not None and (not NAME.match(cfg.name) or len(cfg.name) > NAME_MAX):
        issues.append(ConfigIssue("name", f"{cfg.name!r} cannot name an artifact folder; accepted: up to {NAME_MAX} letters, digits, "
                                          "'_', '-', '.', starting with a letter or digit"))
    problem = store_root_issue(cfg.store.root)
    if problem:
        issues.append(ConfigIssue("store.root", problem))
    else:
        cfg.store.root = os.path.expanduser(cfg.store.root)
    _check_model(cfg, issues)
    _check_target(cfg, issues)
    _check_lowering(cfg, issues)
    _choice(issues, "quantization.scheme", cfg.quantization.scheme)
    _choice(issues, "quantization.io", cfg.quantization.io)
    for name, entry in cfg.overrides.items():
        _check_override(f"overrides.{name}", entry, issues)
    _check_qat(cfg, issues)
    for key, ds in (("calibration", cfg.calibration), ("evaluation", cfg.evaluation)):
        _check_dataset(key, ds, issues)
    if cfg.evaluation.tosa_samples <= 0:
        issues.append(ConfigIssue("evaluation.tosa_samples", f"{cfg.evaluation.tosa_samples} is not positive; accepted: an integer >= 1"))
    for f in dataclasses.fields(cfg.budget):
        limit = getattr(cfg.budget, f.name)
        if limit is not None and limit < 0:
            issues.append(ConfigIssue(f"budget.{f.name}", f"{limit!r} is negative; accepted: null or a number >= 0"))


def _check_model(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    m = cfg.model
    target = m.factory.get("_target_")
    if not isinstance(target, str) or not _DOTTED.match(target):
        issues.append(ConfigIssue("model.factory._target_", f"{target!r} is not a dotted path to a callable; accepted: e.g. ethosu_build.models.digits_cnn or mypkg.models.build"))
    if m.checkpoint is not None and not Path(m.checkpoint).is_file():
        issues.append(ConfigIssue("model.checkpoint", f"file {m.checkpoint!r} does not exist; accepted: null or an existing state_dict file (torch.save)"))
    shape = m.input_shape
    if not shape or any(d is None or d <= 0 for d in shape):
        issues.append(ConfigIssue("model.input_shape", f"{shape!r} is not a shape; accepted: a list of positive integers, batch first, e.g. [1, 3, 32, 32]"))
    elif shape[0] != 1:
        issues.append(ConfigIssue("model.input_shape", f"{shape!r} has batch {shape[0]}; accepted: batch 1 (the deployed program runs one sample at a time)"))


def _check_target(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    t = cfg.target
    if not _choice(issues, "target.accelerator", t.accelerator):
        return
    _choice(issues, "target.cpu_qdq_kernels", t.cpu_qdq_kernels)
    _choice(issues, "target.optimise", t.optimise)
    if t.arena_cache_size is not None and not 0 < t.arena_cache_size <= targets.ARENA_CACHE_MAX:
        issues.append(ConfigIssue("target.arena_cache_size", f"{t.arena_cache_size!r} is not a size Vela takes; accepted: null (the memory mode's) "
                                                              f"or a number of bytes from 1 to {targets.ARENA_CACHE_MAX}"))
    for key in ("system_config", "memory_mode", "config_ini"):
        if getattr(t, key) is not None and not getattr(t, key).strip():
            issues.append(ConfigIssue(f"target.{key}", f"{getattr(t, key)!r} is empty; accepted: null (ExecuTorch's default) or a name"
                                                         + (" from the .ini" if key != "config_ini" else " of a Vela .ini file")))
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
        issues.append(ConfigIssue("target.config_ini", f"{t.config_ini!r} is not an existing .ini file; accepted: null (Vela's Arm/vela.ini) or a path to a Vela .ini (use ./ for a file in the current folder)"))
        return
    try:
        systems, modes = targets.ini_choices(t.config_ini)
    except (configparser.Error, UnicodeDecodeError, OSError) as exc:
        issues.append(ConfigIssue("target.config_ini", f"{t.config_ini!r} is not a readable Vela .ini ({type(exc).__name__}: {_first_line(exc)}); "
                                                       "accepted: null (Vela's Arm/vela.ini) or an .ini file in Vela's format"))
        return
    if targets.resolved_system_config(t) not in systems:
        issues.append(ConfigIssue("target.system_config", f"{t.system_config!r} is not in {ini.name}; {accepted(sorted(systems), t.system_config)}"))
    if targets.resolved_memory_mode(t) not in modes:
        issues.append(ConfigIssue("target.memory_mode", f"{t.memory_mode!r} is not in {ini.name}; {accepted(sorted(modes), t.memory_mode)}"))


def _check_lowering(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    low = cfg.lowering
    if _choice(issues, "lowering.io_layout", low.io_layout) and low.io_layout == "nhwc" and len(cfg.model.input_shape) != 4:
        issues.append(ConfigIssue("lowering.io_layout", (
            f"'nhwc' needs a 4-D model input, but model.input_shape is {cfg.model.input_shape!r}; accepted: nchw for this model")))
    for i, name in enumerate(low.rewrites):
        if _choice(issues, f"lowering.rewrites.{i}", name, "lowering.rewrites.*") and name in low.rewrites[:i]:
            issues.append(ConfigIssue(f"lowering.rewrites.{i}", f"{name!r} is listed twice; accepted: each rewrite once"))


def _check_override(key: str, entry: OverrideEntry, issues: list[ConfigIssue]) -> None:
    selectors = [s for s in OverrideEntry.SELECTORS if getattr(entry, s) not in (None, False)]
    if len(selectors) != 1:
        found = ", ".join(f"{s}={getattr(entry, s)!r}" for s in selectors) or "none"
        issues.append(ConfigIssue(key, f"needs exactly one selector, found {found}; accepted: one of module_name, module_type, io: true"))
    _choice(issues, f"{key}.scheme", entry.scheme, "overrides.*.scheme")
    if entry.module_type is not None and not _DOTTED.match(entry.module_type):
        issues.append(ConfigIssue(f"{key}.module_type", f"{entry.module_type!r} is not a dotted class path; accepted: e.g. torch.nn.Linear"))
    if entry.io is not None and entry.scheme in ("a16w8", "a8w4"):
        issues.append(ConfigIssue(f"{key}.scheme", f"{entry.scheme!r} is not an IO scheme; accepted for io: int8, float (or quantization.io=uint8)"))


def _check_qat(cfg: BuildConfig, issues: list[ConfigIssue]) -> None:
    """A QAT-only scheme needs quantization.qat; the qat settings themselves."""
    q = cfg.quantization
    uses = [("quantization.scheme", q.scheme)] + [(f"overrides.{n}.scheme", e.scheme) for n, e in cfg.overrides.items()]
    if q.qat is None:
        for key, scheme in uses:
            if scheme in QAT_ONLY_SCHEMES:
                issues.append(ConfigIssue(key, f"{scheme!r} needs quantization-aware training, and quantization.qat is null; accepted: set quantization.qat (e.g. quantization=a8w4_qat), or a post-training scheme: int8, a16w8"))
        return
    qat: QatConfig = q.qat
    _choice(issues, "quantization.qat.optimizer", qat.optimizer)
    _choice(issues, "quantization.qat.loss", qat.loss)
    for name, value, low in (("epochs", qat.epochs, 1), ("batch_size", qat.batch_size, 1)):
        if value < low:
            issues.append(ConfigIssue(f"quantization.qat.{name}", f"{value} is not positive; accepted: an integer >= {low}"))
    if qat.num_samples is not None and qat.num_samples <= 0:
        issues.append(ConfigIssue("quantization.qat.num_samples", f"{qat.num_samples} is not positive; accepted: null (the whole dataset) or 1 up to its size"))
    if not qat.lr > 0:
        issues.append(ConfigIssue("quantization.qat.lr", f"{qat.lr!r} is not positive; accepted: a learning rate > 0, e.g. 1e-4"))
    issues.extend(data.static_issues("quantization.qat.dataset", qat.dataset))


def _check_dataset(key: str, ds: DatasetConfig, issues: list[ConfigIssue]) -> None:
    if ds.num_samples <= 0:
        issues.append(ConfigIssue(f"{key}.num_samples", f"{ds.num_samples} is not positive; accepted: 1 up to the size of the dataset"))
    if ds.batch_size <= 0:
        issues.append(ConfigIssue(f"{key}.batch_size", f"{ds.batch_size} is not positive; accepted: an integer >= 1"))
    issues.extend(data.static_issues(f"{key}.dataset", ds.dataset))


def store_root_issue(root: Any) -> Optional[str]:
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
        return f"{root!r} cannot be {'written' if existing == path else 'created'}: no write permission on {str(existing)!r}; {accepted}"
    return None


def accepted_keys(dotted: str) -> Optional[list[str]]:
    """The keys the schema accepts at the parent of `dotted` (for Hydra's override errors)."""
    tp: Any = BuildConfig
    for part in dotted.split(".")[:-1]:
        if not dataclasses.is_dataclass(tp):
            return None
        hints = typing.get_type_hints(tp)
        if part not in hints:
            return None
        tp = hints[part]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = [a for a in typing.get_args(tp) if a is not type(None)][0]
    return [f.name for f in dataclasses.fields(tp)] if dataclasses.is_dataclass(tp) else None


# --- checks against the model and the data (import torch; run only when a stage must) -------


def load_model(cfg: BuildConfig):
    """Instantiate `model.factory` and load `model.checkpoint`; a factory that cannot be
    found or called with the given arguments, or a checkpoint that does not fit, is a config
    error."""
    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    target = cfg.model.factory["_target_"]
    try:
        model = instantiate(cfg.model.factory, _convert_="all")
    except SystemExit as exc:  # the factory's own code ended with sys.exit
        raise ConfigError(ConfigIssue("model.factory", f"{target!r} called sys.exit({exc.code!r}); accepted: a callable returning a torch.nn.Module")) from exc
    except InstantiationException as exc:
        # Hydra's first line only names the target; the reason (e.g. an unexpected keyword) follows.
        reason = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])[:400]
        raise ConfigError(ConfigIssue("model.factory", f"{target!r} could not be called: {reason}; accepted: a callable returning a torch.nn.Module")) from exc
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(ConfigIssue("model.factory._target_", f"{target!r} returned {type(model).__name__}; accepted: a callable returning a torch.nn.Module"))
    if cfg.model.checkpoint:
        try:
            state = torch.load(cfg.model.checkpoint, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            model.load_state_dict(state)
        except Exception as exc:
            raise ConfigError(ConfigIssue("model.checkpoint", f"{cfg.model.checkpoint!r} does not load into {target}: {_first_line(exc)}; accepted: a state_dict saved from this model")) from exc
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _source_failure(exc: BaseException) -> str:
    """Why a user's callable failed, with Hydra's wrapper taken off (its first line only
    names the target; the reason, e.g. an unexpected keyword, is its cause)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, SystemExit):
        return f"it called sys.exit({cause.code!r})"
    return f"{type(cause).__name__}: {_first_line(cause)}"


def check_model(cfg: BuildConfig, model) -> None:
    """input_shape, override selectors and dataset sizes, against the real model and data."""
    import torch

    issues: list[ConfigIssue] = []
    try:
        with torch.no_grad():
            model(torch.zeros(cfg.model.input_shape))
    except (Exception, SystemExit) as exc:  # the model's own code: never let it end the process
        issues.append(ConfigIssue("model.input_shape", f"{cfg.model.input_shape} is rejected by the model: {_source_failure(exc)}; accepted: the shape the model's forward() takes, batch 1"))
    names = [n for n, _ in model.named_modules() if n]
    for name, entry in cfg.overrides.items():
        key = f"overrides.{name}"
        if entry.module_name is not None and entry.module_name not in names:
            hint = did_you_mean(entry.module_name, names) or f"; modules include {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
            issues.append(ConfigIssue(f"{key}.module_name", f"{entry.module_name!r} not found in the model{hint}"))
        if entry.module_type is not None:
            issues.extend(_check_module_type(f"{key}.module_type", entry.module_type, model))
    if not issues:  # datasets are only worth loading once the model itself is right
        labelled = {}
        for key, ds in (("calibration", cfg.calibration), ("evaluation", cfg.evaluation)):
            found, labelled[key] = _check_dataset_size(key, ds)
            issues.extend(found)
        drop = cfg.budget.max_accuracy_drop
        if drop is not None and not issues and not labelled["evaluation"]:
            issues.append(ConfigIssue("budget.max_accuracy_drop", f"{drop!r} cannot be judged: the evaluation data "
                                      f"({cfg.evaluation.dataset.get('_target_')}) has no labels; accepted: null, or labelled evaluation data"))
        qat = cfg.quantization.qat
        if qat is not None:
            issues.extend(_check_dataset_size("quantization.qat", qat, qat.loss if qat.loss == "cross_entropy" else None)[0])
    if issues:
        raise ConfigError(issues)


def _check_module_type(key: str, dotted: str, model) -> list[ConfigIssue]:
    import importlib

    import torch

    module, _, cls_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError) as exc:
        return [ConfigIssue(key, f"{dotted!r} cannot be imported ({_first_line(exc)}); accepted: a dotted path to a torch.nn.Module subclass, e.g. torch.nn.Linear")]
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        return [ConfigIssue(key, f"{dotted!r} is not a module class; accepted: a torch.nn.Module subclass, e.g. torch.nn.Linear")]
    present = sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()})
    if not any(isinstance(m, cls) for m in model.modules()):
        return [ConfigIssue(key, f"no module of type {dotted} in the model; types present: {', '.join(p for p in present if not p.startswith('torch.nn.modules.container'))}")]
    return []


def _check_dataset_size(key: str, ds: DatasetConfig | QatConfig, labels_for: str | None = None) -> tuple[list[ConfigIssue], bool]:
    """(issues, labelled): the dataset loads and holds `num_samples` (null: all of it); with
    `labels_for`, the loss that needs labels, its items must carry them."""
    try:
        dataset = data.instantiate(ds.dataset)
        size = len(dataset)
        labelled = size > 0 and isinstance(dataset[0], (tuple, list)) and len(dataset[0]) > 1
    except (Exception, SystemExit) as exc:  # a user's source is user code: name it, never crash
        return [ConfigIssue(f"{key}.dataset", f"{ds.dataset.get('_target_')!r} could not be loaded: {_source_failure(exc)}")], False
    if ds.num_samples is not None and ds.num_samples > size:
        null = "null or " if isinstance(ds, QatConfig) else ""
        return [ConfigIssue(f"{key}.num_samples", f"{ds.num_samples} is larger than the dataset ({size} samples); accepted: {null}1..{size}")], labelled
    if labels_for is not None and not labelled:
        return [ConfigIssue(f"{key}.loss", f"{labels_for!r} needs labels and {ds.dataset.get('_target_')!r} has none; accepted: distill or auto")], labelled
    return [], labelled


def check_override_matches(matches: dict[str, int], cfg: BuildConfig) -> None:
    """An override that selects no node of the exported graph would be a silent no-op."""
    issues = [
        ConfigIssue(f"overrides.{name}", f"{cfg.overrides[name].describe()} selects no operator in the exported graph (the module is never called in forward()); accepted: a module that runs in forward()")
        for name, n in matches.items() if n == 0
    ]
    if issues:
        raise ConfigError(issues)
