"""One build: validate -> keys -> (up to date? done) -> stages, each cached -> store.

A rebuild whose build key is already stored (and whose stored files still check out) runs
no stage and imports neither torch nor executorch. A cache hit on a later stage skips every
stage before it.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Generic, Optional, TypeVar

from . import budgets, data, report, stages
from .cache import CorruptEntry, Entry, StageCache
from .errors import BuildError, ConfigError, ConfigIssue
from .fingerprint import file_sha256, source_fingerprint, tool_versions
from .schema import BuildConfig
from .store import MANIFEST_SCHEMA, Artifact, ArtifactStore
from .validate import validate

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class BuildResult:
    artifact: Artifact
    created: bool  # False: an identical build was already stored and is reused
    stages: dict[str, dict[str, Any]]
    seconds: float

    @property
    def up_to_date(self) -> bool:
        return not self.created and not self.stages


def build(
    container: dict[str, Any],
    *,
    recipe: Optional[str] = None,
    recipe_path: Optional[Path] = None,
    cli_overrides: Optional[list[str]] = None,
) -> BuildResult:
    try:
        return _build(container, recipe, recipe_path, cli_overrides or [])
    except SystemExit as exc:
        # Library or user code (a dataset, a model factory) that calls sys.exit must not end
        # the process, nor a sweep: it is a failed build, named where it happened.
        raise BuildError(f"the build was stopped by sys.exit({exc.code!r}) in {_origin(exc)}") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BuildError(f"no space left on the device holding {exc.filename or 'the store'}; nothing was stored") from exc
        raise


def _origin(exc: BaseException) -> str:
    """Where an exception was raised: the innermost frame of its traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{frames[-1].filename}:{frames[-1].lineno} ({frames[-1].name})" if frames else "unknown code"


def _build(container: dict[str, Any], recipe: Optional[str], recipe_path: Optional[Path], cli_overrides: list[str]) -> BuildResult:
    t0 = time.perf_counter()
    cfg = validate(container, default_name=recipe)
    origin = _provenance(cfg, recipe, recipe_path)
    store = ArtifactStore(cfg.store.root)
    keys = stages.stage_keys(cfg)
    existing = store.find(cfg.name, keys.build)
    if existing is not None:
        return BuildResult(existing, False, {}, time.perf_counter() - t0)

    run = _Run(cfg, StageCache(cfg.store.root), keys)
    evaluation = run.evaluation()
    compiled = run.compiled()
    lowered = run.lowered()
    lower_info = {"delegation": lowered.info["delegation"], "vela": compiled.metrics}
    gates = budgets.check(cfg.budget, lower_info, evaluation)  # a breach raises: nothing stored

    staging = store.staging(cfg.name)
    # Only what the vela stage lists travels into the artifact (cache.Entry.read).
    (staging / "model.pte").write_bytes(compiled.pte)
    (staging / "vela").mkdir()
    for name, blob in compiled.reports.items():
        (staging / "vela" / name).write_bytes(blob)
    (staging / "config.yaml").write_text(_config_yaml(cfg))
    manifest = _manifest_fn(cfg, keys, recipe, cli_overrides, run, lower_info, evaluation, gates, origin)
    artifact, created = store.publish(cfg.name, keys.build, staging, manifest, report=lambda m: report.render(m, staging / "vela"))
    return BuildResult(artifact, created, run.record, time.perf_counter() - t0)


def quantized_model(cfg: BuildConfig, model=None):
    """The quantize stage alone, taken from the stage cache or computed into it as a build
    would: (float model, quantized batch-1 program, batch-dynamic program or None,
    evaluation samples). For searches that measure many quantizations without lowering;
    `model`, if given, is the float model already loaded and checked for this config."""
    run = _Run(cfg, StageCache(cfg.store.root), stages.stage_keys(cfg))
    run._model = model
    quantized = run.quantized()
    return run.model(), quantized.program, quantized.batched, run.evaluation_samples()


# --- stage results: what each stage hands on, and how it is stored in its cache entry -------


@dataclass
class Exported:
    programs: dict[str, Any]  # "static": batch-1 ExportedProgram; "dynamic": batch-dynamic or None

    def save(self, folder: Path) -> None:
        for kind, program in self.programs.items():
            if program is not None:
                (folder / f"{kind}.pt2").write_bytes(stages.program_bytes(program))

    @classmethod
    def load(cls, entry: Entry) -> "Exported":
        return cls({k: stages.load_program(entry.read(f"{k}.pt2")) if entry.has(f"{k}.pt2") else None for k in ("static", "dynamic")})


@dataclass
class Quantized:
    program: Any  # the quantized batch-1 ExportedProgram, which is lowered
    batched: Any  # the same with a dynamic batch, for evaluation in batches; or None
    info: dict[str, Any]  # calibration / QAT / control flow / rewrites, for the manifest

    def save(self, folder: Path) -> None:
        (folder / "program.pt2").write_bytes(stages.program_bytes(self.program))
        if self.batched is not None:
            (folder / "batched.pt2").write_bytes(stages.program_bytes(self.batched))
        _write_json(folder / "info.json", self.info)

    @classmethod
    def load(cls, entry: Entry) -> "Quantized":
        batched = stages.load_program(entry.read("batched.pt2")) if entry.has("batched.pt2") else None
        return cls(stages.load_program(entry.read("program.pt2")), batched, entry.read_json("info.json"))


@dataclass
class Lowered:
    template: bytes  # the .pte with a placeholder payload per NPU partition
    tosa: list[bytes]  # each partition's TOSA flatbuffer
    info: dict[str, Any]  # delegation, partitions, retargetable
    quant_info: dict[str, Any]  # the quantize stage's info: a cached lowering needs no quantize

    def save(self, folder: Path) -> None:
        (folder / "template.pte").write_bytes(self.template)
        for i, flatbuffer in enumerate(self.tosa):
            (folder / f"part{i}.tosa").write_bytes(flatbuffer)
        _write_json(folder / "info.json", self.info)
        _write_json(folder / "quantize.json", self.quant_info)

    @classmethod
    def load(cls, entry: Entry) -> "Lowered":
        info = entry.read_json("info.json")
        tosa = [entry.read(f"part{i}.tosa") for i in range(int(info["partitions"]))]
        return cls(entry.read("template.pte"), tosa, info, entry.read_json("quantize.json"))


@dataclass
class Compiled:
    pte: bytes  # model.pte for the target
    reports: dict[str, bytes]  # Vela's summary.csv, per_layer.csv and part<i>.tosa
    metrics: dict[str, Any]

    REPORT_SUFFIXES = (".csv", ".tosa")

    def save(self, folder: Path) -> None:
        (folder / "model.pte").write_bytes(self.pte)
        for name, blob in self.reports.items():
            (folder / name).write_bytes(blob)
        _write_json(folder / "info.json", self.metrics)

    @classmethod
    def load(cls, entry: Entry) -> "Compiled":
        reports = {n: entry.read(n) for n in sorted(entry.files) if n.endswith(cls.REPORT_SUFFIXES)}
        return cls(entry.read("model.pte"), reports, entry.read_json("info.json"))


@dataclass
class Evaluated:
    info: dict[str, Any]  # accuracy and the TOSA check

    def save(self, folder: Path) -> None:
        _write_json(folder / "info.json", self.info)

    @classmethod
    def load(cls, entry: Entry) -> "Evaluated":
        return cls(entry.read_json("info.json"))


class _Stage(Generic[T]):
    """One run of a stage: taken from the cache, or computed under the key's lock and stored.

    `load(entry)` turns a verified entry into the stage's result; an entry that fails to
    load is discarded and the stage computed again. `inputs()` returns the results of the
    stages it consumes (computed or loaded under this stage's lock, down the pipeline, so
    nested locks cannot deadlock), `compute(*inputs)` the result, whose `save(folder)`
    writes the entry. Only `compute` counts as the stage's time."""

    def __init__(self, run: "_Run", name: str, load: Callable[[Entry], T], compute: Callable[..., T],
                 inputs: Callable[[], tuple] = tuple, needs_model: bool = True):
        self.run, self.name, self.load, self.compute, self.inputs, self.needs_model = run, name, load, compute, inputs, needs_model

    def get(self) -> T:
        key = getattr(self.run.keys, self.name)
        cache = self.run.cache
        result = self._cached(key)
        if result is not None:
            return result
        if self.needs_model:
            # Config errors that need the model (module names, dataset sizes) are found
            # before any lock is taken or anything is written.
            self.run.model()
        with cache.claim(key, self.name):
            result = self._cached(key)  # another process may have computed it while we waited
            if result is not None:
                return result
            args = self.inputs()
            result = self.run.timed(self.name, lambda: self.compute(*args))
            with cache.put(key, self.name) as folder:
                result.save(folder)
        return result

    def _cached(self, key: str) -> Optional[T]:
        entry = self.run.cache.get(key)
        if entry is None:
            return None
        try:
            result = self.load(entry)
        except Exception as exc:  # e.g. a program that no longer deserializes
            self.run.cache.discard(key, f"it does not load: {type(exc).__name__}: {_first_line(exc)}")
            return None
        self.run.cached(self.name)
        return result


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


class _Run:
    """The stages of one build, each taken from the cache when its key is there. A cache hit
    on a later stage skips the stages before it unless a later stage needs their output.
    A missing entry is computed under the key's lock (StageCache.claim), so parallel jobs
    that need the same stage compute it once."""

    def __init__(self, cfg: BuildConfig, cache: StageCache, keys: stages.StageKeys):
        self.cfg, self.cache, self.keys = cfg, cache, keys
        self.record: dict[str, dict[str, Any]] = {}  # per stage: key, ran or cached, seconds
        stages.thread_lock_for_tqdm()
        self._model = None
        self._results: dict[str, Any] = {}
        self._eval_samples = None
        self._tosa_check: Optional[_TosaCheck] = None

    # --- the stage log ---------------------------------------------------------------------

    def cached(self, stage: str) -> None:
        self.record[stage] = {"key": getattr(self.keys, stage), "status": "cached", "seconds": 0.0}
        log.info("%s: cached (key %s)", stage, getattr(self.keys, stage)[:12])

    def timed(self, stage: str, fn: Callable[[], T]) -> T:
        log.info("%s: running", stage)
        t0 = time.perf_counter()
        try:
            out = fn()
        except (ConfigError, BuildError, CorruptEntry):
            raise
        except SystemExit as exc:
            raise BuildError(f"{stage} stage: stopped by sys.exit({exc.code!r}) in {_origin(exc)}") from exc
        except Exception as exc:  # a crash inside torch/executorch: name the stage, keep the trace in the log
            log.debug("%s failed", stage, exc_info=True)
            raise BuildError(f"{stage} stage failed: {type(exc).__name__}: {_first_line(exc)} (traceback in the run's build.log)") from exc
        seconds = round(time.perf_counter() - t0, 3)
        self.record[stage] = {"key": getattr(self.keys, stage), "status": "ran", "seconds": seconds}
        log.info("%s: done in %.1f s", stage, seconds)
        return out

    def _stage(self, name: str, load: Callable[[Entry], T], compute: Callable[..., T], inputs: Callable[[], tuple] = tuple,
               needs_model: bool = True) -> T:
        if name not in self._results:
            self._results[name] = _Stage(self, name, load, compute, inputs, needs_model).get()
        return self._results[name]

    # --- inputs ----------------------------------------------------------------------------

    def model(self):
        from .validate import check_model, load_model

        if self._model is None:
            self._model = load_model(self.cfg)
            check_model(self.cfg, self._model)
        return self._model

    def evaluation_samples(self):
        cfg = self.cfg
        if self._eval_samples is None:
            self._eval_samples = data.take(data.instantiate(cfg.evaluation.dataset), cfg.evaluation.num_samples, cfg.model.input_shape, "evaluation.dataset")
        return self._eval_samples

    # --- the stages ------------------------------------------------------------------------

    def exported(self) -> Exported:
        model = self.model()
        return self._stage("export", Exported.load, lambda: Exported(stages.run_export(model, self.cfg.model.input_shape)))

    def quantized(self) -> Quantized:
        return self._stage("quantize", Quantized.load, self._quantize, lambda: (self.exported(), self._training_samples()))

    def _training_samples(self):
        """What the quantizer learns ranges from: the calibration set, or QAT's training set."""
        cfg = self.cfg
        qat = cfg.quantization.qat
        if qat is None:
            return data.take(data.instantiate(cfg.calibration.dataset), cfg.calibration.num_samples, cfg.model.input_shape, "calibration.dataset")
        dataset = data.instantiate(qat.dataset)
        return data.take(dataset, qat.num_samples or len(dataset), cfg.model.input_shape, "quantization.qat.dataset")

    def _quantize(self, exported: Exported, samples) -> Quantized:
        from . import quantize
        from .validate import check_override_matches

        cfg = self.cfg
        matches = quantize.override_matches(exported.programs["static"].graph_module, cfg.overrides)
        check_override_matches(matches, cfg)
        quantized, batched, info = stages.run_quantize(cfg, exported.programs, samples, self.model())
        info["override_matches"] = matches
        return Quantized(quantized, batched, info)

    def lowered(self) -> Lowered:
        def compute(quantized: Quantized) -> Lowered:
            pte, info, _, files = stages.run_lower(self.cfg, quantized.program, self._tosa_check)
            return Lowered(pte, [files[f"part{i}.tosa"] for i in range(info["partitions"])], info, quantized.info)

        return self._stage("lower", Lowered.load, compute, lambda: (self.quantized(),))

    def quant_info(self) -> dict[str, Any]:
        """The quantize stage's info, from the quantize stage if it ran, else the lowering."""
        if "quantize" in self._results:
            return self._results["quantize"].info
        return self.lowered().quant_info

    def compiled(self) -> Compiled:
        def compute(lowered: Lowered) -> Compiled:
            if lowered.info.get("retargetable"):
                pte, metrics, console, files = stages.run_vela(self.cfg, lowered.template, lowered.tosa)
            else:
                # A program whose serialized form does not round-trip cannot have its payloads
                # swapped: lower it again for this target, with Vela in place.
                log.info("vela: the shared lowering cannot be retargeted; lowering for %s", self.cfg.target.accelerator)
                pte, info, console, files = stages.run_lower(self.cfg, self.quantized().program, run_vela=True)
                metrics = info["vela"]
            log.debug("Vela output:\n%s", console)
            return Compiled(pte, files, metrics)

        # Vela needs only the lowering's files, not the model.
        return self._stage("vela", Compiled.load, compute, lambda: (self.lowered(),), needs_model=False)

    def evaluation(self) -> dict[str, Any]:
        """Float vs quantized metrics and the TOSA check, cached under the evaluate key. The
        TOSA check needs the partitioned program, which exists only while lowering: it sees
        the lowering run for this build, or, if the lowering came from the cache, one run
        again in memory."""
        cfg = self.cfg
        check = _TosaCheck(self) if cfg.evaluation.tosa_check else None

        def inputs() -> tuple:
            self._tosa_check = check  # seen by the lowering, if it runs now
            self.lowered()
            return self.quantized(), self.evaluation_samples()

        def compute(quantized: Quantized, samples) -> Evaluated:
            result = {"accuracy": stages.run_evaluate(cfg, self.model(), quantized.program, samples, quantized.batched)["accuracy"]}
            if check is None:
                result["tosa_check"] = {"status": "off", "reason": "evaluation.tosa_check is false"}
            else:
                if check.result is None:  # lowering came from the cache: lower again, in memory
                    stages.run_lower(cfg, quantized.program, check)
                result["tosa_check"] = check.result
            return Evaluated(result)

        return self._stage("evaluate", Evaluated.load, compute, inputs).info


class _TosaCheck:
    """Called by the lowering with the partitioned program; runs evaluate.tosa_check on it."""

    def __init__(self, run: _Run):
        self.run = run
        self.result: Optional[dict[str, Any]] = None

    def __call__(self, edge_program, tosa_by_payload: dict[str, bytes]) -> None:
        from . import evaluate

        try:
            self.result = evaluate.tosa_check(
                edge_program, tosa_by_payload, self.run.quantized().program, self.run.evaluation_samples(), self.run.cfg.evaluation.tosa_samples
            )
        except (ConfigError, BuildError):
            raise
        except Exception as exc:  # a check that cannot run is a finding, not a failed build
            log.debug("TOSA check failed", exc_info=True)
            self.result = {"status": "failed", "reason": f"{type(exc).__name__}: {_first_line(exc)}"}


def _config_yaml(cfg: BuildConfig) -> str:
    from omegaconf import OmegaConf

    header = "# The resolved config of this artifact; it rebuilds the same bytes with the same tools.\n"
    return header + OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))


def fingerprints(cfg: BuildConfig) -> dict[str, Any]:
    return {
        "model_source": source_fingerprint(cfg.model.factory["_target_"]),
        "checkpoint": file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint else None,
        "calibration_data": data.fingerprint(cfg.calibration.dataset),
        "evaluation_data": data.fingerprint(cfg.evaluation.dataset),
        "qat_data": data.fingerprint(cfg.quantization.qat.dataset) if cfg.quantization.qat else None,
    }


def _provenance(cfg: BuildConfig, recipe: Optional[str], recipe_path: Optional[Path]) -> dict[str, Any]:
    """Git state of the recipe's repo (refusing an uncommitted recipe file unless
    allow_dirty) and drift from the recipe's lock (an error under strict)."""
    from . import provenance

    git = provenance.git_info(recipe_path)
    if recipe_path is not None and git and git.get("file_dirty") and not cfg.allow_dirty:
        why = "is not committed (untracked, or ignored by git)" if not git.get("file_tracked", True) else "has uncommitted changes"
        raise ConfigError(ConfigIssue("recipe", f"{recipe!r} ({recipe_path}) {why}, so the artifact could not be traced to a commit; accepted: a committed recipe, or allow_dirty=true"))
    origin: dict[str, Any] = {"recipe_file": str(recipe_path) if recipe_path else None, "git": git, "lock": None}
    lock = provenance.lock_path(recipe_path) if recipe_path else None
    if lock is not None and lock.is_file():
        drift = provenance.lock_drift(json.loads(lock.read_text()), tool_versions(), fingerprints(cfg))
        origin["lock"] = {"file": str(lock), "drift": drift}
        if drift and cfg.strict:
            raise BuildError(f"recipe {recipe!r} drifted from {lock.name} (strict=true): " + "; ".join(drift))
        for line in drift:
            log.warning("drift from %s: %s", lock.name, line)
    return origin


def _manifest_fn(cfg, keys, recipe, cli_overrides, run, lower_info, evaluation, gates, origin):
    quant_info = run.quant_info()

    def manifest(version: int, files: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema_version": MANIFEST_SCHEMA,
            "name": cfg.name,
            "version": version,
            "build_key": keys.build,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "recipe": recipe,
            "command_line_overrides": list(cli_overrides),
            "config": dataclasses.asdict(cfg),
            "fingerprints": fingerprints(cfg),
            "tools": tool_versions(),
            "provenance": origin,
            "files": files,
            "stages": run.record,
            "stage_keys": keys.as_dict(),  # every stage this artifact rests on (gc keeps them)
            "quantization": {
                "scheme": cfg.quantization.scheme,
                "per_channel": cfg.quantization.per_channel,
                "io": cfg.quantization.io,
                "overrides": [
                    {"name": n, "selector": e.describe(), "scheme": e.scheme, "ops_selected": quant_info.get("override_matches", {}).get(n)}
                    for n, e in cfg.overrides.items()
                ],
                "applied": quant_info["applied"],
                "calibration": quant_info["calibration"],
                # Quantization-aware training: what the training loop did (null: post-training).
                "qat": quant_info.get("qat"),
                # cond / while_loop: each op's branches and how many calibration samples reached them.
                "control_flow": quant_info.get("control_flow"),
            },
            # What the lowering did beyond ExecuTorch's defaults (each computes the same outputs).
            "lowering": {"io_layout": cfg.lowering.io_layout, "rewrites": quant_info.get("rewrites", []),
                         "unmatched": quant_info.get("rewrites_unmatched", [])},  # listed rewrites that found nothing to do
            "delegation": lower_info["delegation"],
            "metrics": {"vela": lower_info["vela"], "accuracy": evaluation["accuracy"], "tosa_check": evaluation["tosa_check"]},
            "budget": gates,
        }

    return manifest


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))
