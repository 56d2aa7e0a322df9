"""Config checks that need the model itself (torch): the factory and checkpoint load, the
input shape is one forward() takes, override selectors name real modules and select
operators, and the datasets load and hold enough samples. They run before any stage takes
a lock (stage.Run.model), so a config error writes nothing.

torch is imported inside functions: the stage runner imports this module on every path.
"""

from __future__ import annotations

import importlib

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from .. import data
from ..config.schema import BuildConfig, DatasetConfig, QatConfig
from ..data import class_folders
from ..errors import ConfigError, ConfigIssue, did_you_mean, first_line, without_hydra_hints


def load_model(cfg: BuildConfig):
    """Instantiate `model.factory` and load `model.checkpoint`; a factory that cannot be
    found or called with the given arguments, or a checkpoint that does not fit, is a config
    error."""
    import torch

    target = cfg.model.factory["_target_"]
    try:
        model = instantiate(cfg.model.factory, _convert_="all")
    except SystemExit as exc:  # the factory's own code ended with sys.exit
        raise ConfigError(
            ConfigIssue(
                "model.factory",
                f"{target!r} called sys.exit({exc.code!r}); accepted: a callable returning a torch.nn.Module",
            )
        ) from exc
    except InstantiationException as exc:
        # Hydra's first line only names the target; the reason (e.g. an unexpected keyword)
        # follows, or is its cause (a target that cannot be located).
        located = exc.__cause__ is not None and "Error locating target" in str(exc)
        reason = _lines(exc.__cause__ if located else exc, 3 if located else 2)
        raise ConfigError(
            ConfigIssue(
                "model.factory",
                f"{target!r} could not be called: {reason}; accepted: a callable returning a torch.nn.Module",
            )
        ) from exc
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(
            ConfigIssue(
                "model.factory._target_",
                f"{target!r} returned {type(model).__name__}; accepted: a callable returning a torch.nn.Module",
            )
        )
    if cfg.model.checkpoint:
        try:
            state = torch.load(cfg.model.checkpoint, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            model.load_state_dict(state)
        except Exception as exc:
            # torch's first line only says "Error(s) in loading state_dict": the keys follow.
            reason = (
                " ".join(line.strip() for line in str(exc).strip().splitlines()[:3] if line.strip())[:400]
                or type(exc).__name__
            )
            raise ConfigError(
                ConfigIssue(
                    "model.checkpoint",
                    f"{cfg.model.checkpoint!r} does not load into {target}: {reason}; "
                    "accepted: a state_dict saved from this model",
                )
            ) from exc
    return model.eval()


def _lines(exc: BaseException, n: int) -> str:
    """The first `n` non-empty lines of an exception's message, on one line."""
    text = without_hydra_hints(str(exc)).strip()
    return " ".join([line.strip() for line in text.splitlines() if line.strip()][:n])[:400] or type(exc).__name__


def _source_failure(exc: BaseException) -> str:
    """Why a user's callable failed, with Hydra's wrapper taken off (its first line only
    names the target; the reason, e.g. an unexpected keyword, is its cause)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    if isinstance(cause, SystemExit):
        return f"it called sys.exit({cause.code!r})"
    # An ImportError of Hydra's says what failed on its second and third lines.
    return f"{type(cause).__name__}: {_lines(cause, 3) if isinstance(cause, ImportError) else first_line(cause)}"


def check_model(cfg: BuildConfig, model) -> None:
    """The inputs, override selectors and dataset sizes, against the real model and data."""
    import torch

    issues: list[ConfigIssue] = []
    specs = cfg.model.input_specs()
    outputs = None  # the outputs top-1 ranks: evaluate.py flattens each sample's output
    try:
        with torch.no_grad():
            out = model(*example_inputs(specs))
        outputs = out.numel() if isinstance(out, torch.Tensor) and out.numel() >= 2 else None
    except (Exception, SystemExit) as exc:  # the model's own code: never let it end the process
        key = "model.inputs" if cfg.model.inputs else "model.input_shape"
        given = ", ".join(f"{s.name}: {s.dtype} {s.shape}" for s in specs) if cfg.model.inputs else specs[0].shape
        issues.append(
            ConfigIssue(
                key,
                f"{given} is rejected by the model: {_source_failure(exc)}; accepted: the inputs the "
                "model's forward() takes, in its order, batch 1",
            )
        )
    names = [n for n, _ in model.named_modules() if n]
    for name, entry in cfg.overrides.items():
        key = f"overrides.{name}"
        if entry.module_name is not None and entry.module_name not in names:
            hint = (
                did_you_mean(entry.module_name, names)
                or f"; modules include {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"
            )
            issues.append(ConfigIssue(f"{key}.module_name", f"{entry.module_name!r} not found in the model{hint}"))
        if entry.module_type is not None:
            issues.extend(_check_module_type(f"{key}.module_type", entry.module_type, model))
    if not issues:  # datasets are only worth loading once the model itself is right
        labelled = {}
        for key, ds in (("calibration", cfg.calibration), ("evaluation", cfg.evaluation)):
            found, labelled[key] = _check_dataset_size(key, ds, outputs=outputs)
            issues.extend(found)
        drop = cfg.budget.max_accuracy_drop
        if drop is not None and not issues and not labelled["evaluation"]:
            issues.append(
                ConfigIssue(
                    "budget.max_accuracy_drop",
                    f"{drop!r} cannot be judged: the evaluation data "
                    f"({cfg.evaluation.dataset.get('_target_')}) has no labels; accepted: null, or labelled "
                    "evaluation data",
                )
            )
        qat = cfg.quantization.qat
        if qat is not None:
            issues.extend(
                _check_dataset_size(
                    "quantization.qat", qat, qat.loss if qat.loss == "cross_entropy" else None, outputs
                )[0]
            )
    if issues:
        raise ConfigError(issues)


def _check_module_type(key: str, dotted: str, model) -> list[ConfigIssue]:
    import torch

    module, _, cls_name = dotted.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (Exception, SystemExit) as exc:  # a user's module is user code: it may raise anything at import
        why = f"sys.exit({exc.code!r})" if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {first_line(exc)}"
        return [
            ConfigIssue(
                key,
                f"{dotted!r} cannot be imported ({why}); accepted: a dotted path to a torch.nn.Module "
                "subclass, e.g. torch.nn.Linear",
            )
        ]
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        return [
            ConfigIssue(
                key, f"{dotted!r} is not a module class; accepted: a torch.nn.Module subclass, e.g. torch.nn.Linear"
            )
        ]
    if cls is torch.nn.Module:  # the quantizer would match no operator by it, which says nothing useful
        return [
            ConfigIssue(
                key,
                f"{dotted!r} is the base class of every module, so it names no kind of module; accepted: a concrete "
                "class such as torch.nn.Linear or torch.nn.Conv2d (quantization.scheme sets the whole model's scheme)",
            )
        ]
    present = sorted({f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()})
    if not any(isinstance(m, cls) for m in model.modules()):
        return [
            ConfigIssue(
                key,
                f"no module of type {dotted} in the model; types present: "
                f"{', '.join(p for p in present if not p.startswith('torch.nn.modules.container'))}",
            )
        ]
    return []


def _check_dataset_size(
    key: str, ds: DatasetConfig | QatConfig, labels_for: str | None = None, outputs: int | None = None
) -> tuple[list[ConfigIssue], bool]:
    """(issues, labelled): the dataset loads and holds `num_samples` (null: all of it); with
    `labels_for`, the loss that needs labels, its items must carry them; class folders
    (data.images, data.folder) must be labels of the model's `outputs`."""
    target, path = ds.dataset.get("_target_"), ds.dataset.get("path")
    failed = f"{target!r} could not be loaded"
    try:
        dataset = data.instantiate(ds.dataset)
        size = len(dataset)
    except (Exception, SystemExit) as exc:  # a user's source is user code: name it, never crash
        return [ConfigIssue(f"{key}.dataset", f"{failed}: {_source_failure(exc)}")], False
    source = f"{target!r}" + (f" (path {path!r})" if path is not None else "")
    if size == 0:  # no range of num_samples to offer
        return [
            ConfigIssue(f"{key}.dataset", f"{source} holds no samples; accepted: a dataset of at least one sample")
        ], False
    folders = getattr(dataset, "class_folders", None)
    beyond = class_folders.beyond(folders, outputs) if outputs and isinstance(folders, dict) else None
    if beyond:
        return [ConfigIssue(f"{key}.dataset", f"{source}: {beyond}")], True
    if ds.num_samples is not None and ds.num_samples > size:
        return [
            ConfigIssue(
                f"{key}.num_samples",
                f"{ds.num_samples} is larger than the dataset ({size} samples); accepted: null (all of it) or "
                f"1..{size}",
            )
        ], False
    drawn = data.draw(size, ds.num_samples or size, ds.seed if isinstance(ds, DatasetConfig) else None)
    check = getattr(dataset, "check", None)  # a source that vets the items a build takes (data.images)
    if callable(check):
        problems = check(drawn)
        if problems:
            return [ConfigIssue(f"{key}.dataset", p) for p in problems], False
    try:
        item = dataset[drawn[0]] if drawn else None
        labelled = isinstance(item, (tuple, list)) and len(item) > 1
    except (Exception, SystemExit) as exc:
        return [ConfigIssue(f"{key}.dataset", f"{failed}: {_source_failure(exc)}")], False
    if labels_for is not None and not labelled:
        return [
            ConfigIssue(
                f"{key}.loss",
                f"{labels_for!r} needs labels and {ds.dataset.get('_target_')!r} has none; accepted: distill or auto",
            )
        ], labelled
    return [], labelled


def check_override_matches(matches: dict[str, int], cfg: BuildConfig) -> None:
    """An override that selects no node of the exported graph would be a silent no-op."""
    issues = [
        ConfigIssue(
            f"overrides.{name}",
            f"{cfg.overrides[name].describe()} selects no operator in the exported graph (the module is never called "
            "in forward()); accepted: a module that runs in forward()",
        )
        for name, n in matches.items()
        if n == 0
    ]
    if issues:
        raise ConfigError(issues)


def example_inputs(specs: list, batch: int = 1) -> tuple:
    """Zeros of each input's shape and dtype (model.input_specs()), at `batch`."""
    import torch

    return tuple(torch.zeros([batch] + list(s.shape[1:]), dtype=getattr(torch, s.dtype)) for s in specs)
