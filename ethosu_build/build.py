"""One build: validate -> keys -> (up to date? done) -> stages, each cached -> store.

A rebuild whose build key is already stored runs no stage and imports neither torch nor
executorch. A cache hit on a later stage skips every stage before it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from . import budgets, data, report, stages
from .cache import StageCache
from .errors import BuildError, ConfigError, ConfigIssue
from .fingerprint import file_sha256, source_fingerprint, tool_versions
from .schema import BuildConfig
from .store import MANIFEST_SCHEMA, Artifact, ArtifactStore
from .validate import validate

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    artifact: Artifact
    created: bool  # False: an identical build was already stored and is reused
    stages: dict[str, dict[str, Any]]
    seconds: float

    @property
    def up_to_date(self) -> bool:
        return not self.created and not self.stages


@dataclass
class _StageLog:
    """Per-stage key, whether it ran or came from the cache, and its wall time."""

    keys: stages.StageKeys
    record: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def cached(self, stage: str) -> None:
        self.record[stage] = {"key": getattr(self.keys, stage), "status": "cached", "seconds": 0.0}
        log.info("%s: cached (key %s)", stage, getattr(self.keys, stage)[:12])

    def run(self, stage: str, fn: Callable[[], Any]) -> Any:
        log.info("%s: running", stage)
        t0 = time.perf_counter()
        try:
            out = fn()
        except (ConfigError, BuildError):
            raise
        except Exception as exc:  # a crash inside torch/executorch: name the stage, keep the trace in the log
            log.debug("%s failed", stage, exc_info=True)
            text = str(exc).strip().splitlines()
            raise BuildError(f"{stage} stage failed: {type(exc).__name__}: {text[0] if text else ''} (traceback in the run's build.log)") from exc
        seconds = round(time.perf_counter() - t0, 3)
        self.record[stage] = {"key": getattr(self.keys, stage), "status": "ran", "seconds": seconds}
        log.info("%s: done in %.1f s", stage, seconds)
        return out


def build(
    container: dict[str, Any],
    *,
    recipe: Optional[str] = None,
    recipe_path: Optional[Path] = None,
    cli_overrides: Optional[list[str]] = None,
) -> BuildResult:
    t0 = time.perf_counter()
    cfg = validate(container, default_name=recipe)
    origin = _provenance(cfg, recipe, recipe_path)
    store = ArtifactStore(cfg.store.root)
    keys = stages.stage_keys(cfg)
    existing = store.find(cfg.name, keys.build)
    if existing is not None:
        return BuildResult(existing, False, {}, time.perf_counter() - t0)

    run = _Run(cfg, StageCache(cfg.store.root), _StageLog(keys))
    evaluation = run.cached_evaluation()
    if evaluation is None:
        # The TOSA check needs the partitioned program, which exists only while lowering.
        check = _TosaCheck(run) if cfg.evaluation.tosa_check else None
        run.lowered(check)
        evaluation = run.evaluate(check)
    built, vela_info = run.vela()
    lower_info = {"delegation": run.lower_info()["delegation"], "vela": vela_info}
    gates = budgets.check(cfg.budget, lower_info, evaluation)  # a breach raises: nothing stored

    staging = store.staging(cfg.name)
    shutil.copyfile(built / "model.pte", staging / "model.pte")
    (staging / "vela").mkdir()
    for f in built.iterdir():
        if f.name.endswith((".csv", ".tosa")):
            shutil.copyfile(f, staging / "vela" / f.name)
    (staging / "config.yaml").write_text(_config_yaml(cfg))
    manifest = _manifest_fn(cfg, keys, recipe, cli_overrides or [], run, lower_info, evaluation, gates, origin)
    artifact, created = store.publish(cfg.name, keys.build, staging, manifest, report=lambda m: report.render(m, staging / "vela"))
    return BuildResult(artifact, created, run.slog.record, time.perf_counter() - t0)


def quantized_model(cfg: BuildConfig, model=None):
    """The quantize stage alone, taken from the stage cache or computed into it as a build
    would: (float model, quantized batch-1 program, batch-dynamic program or None,
    evaluation samples). For searches that measure many quantizations without lowering;
    `model`, if given, is the float model already loaded and checked for this config."""
    run = _Run(cfg, StageCache(cfg.store.root), _StageLog(stages.stage_keys(cfg)))
    run._model = model
    quantized = run.quantized()
    return run.model(), quantized, run._batched, run.evaluation_samples()


class _Run:
    """The stages of one build, each taken from the cache when its key is there. A cache hit
    on a later stage skips the stages before it unless a later stage needs their output.
    A missing entry is computed under the key's lock (StageCache.claim), so parallel jobs
    that need the same stage compute it once."""

    def __init__(self, cfg: BuildConfig, cache: StageCache, slog: _StageLog):
        self.cfg, self.cache, self.slog = cfg, cache, slog
        self.keys = slog.keys
        stages.thread_lock_for_tqdm()
        self._model = None
        self._quantized = None
        self._batched = None  # the quantized program with a dynamic batch, for evaluation
        self._eval_samples = None
        self.quant_info: dict[str, Any] = {}

    def model(self):
        from .validate import check_model, load_model

        if self._model is None:
            self._model = load_model(self.cfg)
            check_model(self.cfg, self._model)
        return self._model

    def _cached(self, stage: str) -> Optional[Path]:
        entry = self.cache.get(getattr(self.keys, stage))
        if entry is not None:
            self.slog.cached(stage)
        return entry

    def _entry(self, stage: str, make: Callable[[Path], None]) -> tuple[Path, bool]:
        """The stage's cache entry and whether this process computed it: when missing,
        `make(folder)` writes it under the key's lock, unless another process published it
        while this one waited."""
        key = getattr(self.keys, stage)
        entry = self.cache.get(key)
        if entry is None:
            with self.cache.claim(key, stage):
                entry = self.cache.get(key)
                if entry is None:
                    with self.cache.put(key, stage) as tmp:
                        make(tmp)
                    return self.cache.get(key), True
        return entry, False

    def vela(self) -> tuple[Path, dict[str, Any]]:
        """The vela stage's entry (model.pte, Vela's CSVs, the TOSA files) and its metrics."""

        def make(tmp: Path) -> None:
            lowered = self.lowered()
            pte, metrics, console = self.slog.run("vela", lambda: self._run_vela(lowered, tmp))
            log.debug("Vela output:\n%s", console)
            (tmp / "model.pte").write_bytes(pte)
            _write_json(tmp / "info.json", metrics)

        entry, computed = self._entry("vela", make)
        if not computed:
            self.slog.cached("vela")
        return entry, _read_json(entry / "info.json")

    def _run_vela(self, lowered: Path, tmp: Path):
        if self.lower_info().get("retargetable"):
            return stages.run_vela(self.cfg, lowered, tmp)
        # A program whose serialized form does not round-trip cannot have its payloads
        # swapped: lower it again for this target, with Vela in place.
        log.info("vela: the shared lowering cannot be retargeted; lowering for %s", self.cfg.target.accelerator)
        pte, info, console = stages.run_lower(self.cfg, self.quantized(), tmp, run_vela=True)
        return pte, info["vela"], console

    def lower_info(self) -> dict[str, Any]:
        return _read_json(self.lowered() / "info.json")

    def lowered(self, inspect=None) -> Path:
        """The lower stage's entry (template.pte, part<i>.tosa, info.json); `inspect` sees the
        partitioned program if lowering runs (see stages.run_lower)."""

        def make(tmp: Path) -> None:
            quantized = self.quantized()
            pte, info, _ = self.slog.run("lower", lambda: stages.run_lower(self.cfg, quantized, tmp, inspect))
            (tmp / "template.pte").write_bytes(pte)
            _write_json(tmp / "info.json", info)
            _write_json(tmp / "quantize.json", self.quant_info)

        entry, _ = self._entry("lower", make)
        if "lower" not in self.slog.record:  # first use of an entry from the cache
            self.slog.cached("lower")
            self.quant_info = _read_json(entry / "quantize.json")
        return entry

    def quantized(self):
        if self._quantized is not None:
            return self._quantized

        def make(tmp: Path) -> None:
            self._quantized, self._batched, self.quant_info = self._quantize()
            stages.save_program(self._quantized, tmp / "program.pt2")
            if self._batched is not None:
                stages.save_program(self._batched, tmp / "batched.pt2")
            _write_json(tmp / "info.json", self.quant_info)

        entry, computed = self._entry("quantize", make)
        if not computed:
            self.slog.cached("quantize")
            self._quantized = stages.load_program(entry / "program.pt2")
            if (entry / "batched.pt2").is_file():
                self._batched = stages.load_program(entry / "batched.pt2")
            self.quant_info = _read_json(entry / "info.json")
        return self._quantized

    def _quantize(self):
        from . import quantize
        from .validate import check_override_matches

        cfg = self.cfg
        programs = self._exported()
        matches = quantize.override_matches(programs["static"].graph_module, cfg.overrides)
        check_override_matches(matches, cfg)
        qat = cfg.quantization.qat
        if qat is None:
            samples = data.take(data.instantiate(cfg.calibration.dataset), cfg.calibration.num_samples, cfg.model.input_shape)
        else:  # quantization-aware training learns the ranges from its own training set
            dataset = data.instantiate(qat.dataset)
            samples = data.take(dataset, qat.num_samples or len(dataset), cfg.model.input_shape)
        model = self.model()
        quantized, batched, info = self.slog.run("quantize", lambda: stages.run_quantize(cfg, programs, samples, model))
        info["override_matches"] = matches
        return quantized, batched, info

    def _exported(self) -> dict[str, Any]:
        model = self.model()  # checks the model-dependent config first
        programs: dict[str, Any] = {}

        def make(tmp: Path) -> None:
            programs.update(self.slog.run("export", lambda: stages.run_export(model, self.cfg.model.input_shape)))
            for kind, program in programs.items():
                if program is not None:
                    stages.save_program(program, tmp / f"{kind}.pt2")

        entry, computed = self._entry("export", make)
        if computed:
            return programs
        self.slog.cached("export")
        return {
            kind: stages.load_program(entry / f"{kind}.pt2") if (entry / f"{kind}.pt2").is_file() else None
            for kind in ("static", "dynamic")
        }

    def evaluation_samples(self):
        cfg = self.cfg
        if self._eval_samples is None:
            self._eval_samples = data.take(data.instantiate(cfg.evaluation.dataset), cfg.evaluation.num_samples, cfg.model.input_shape)
        return self._eval_samples

    def cached_evaluation(self) -> Optional[dict[str, Any]]:
        entry = self._cached("evaluate")
        return None if entry is None else _read_json(entry / "info.json")

    def evaluate(self, check: Optional["_TosaCheck"]) -> dict[str, Any]:
        """Float vs quantized metrics and the TOSA check, cached under the evaluate key."""
        cfg = self.cfg

        def work() -> dict[str, Any]:
            result = stages.run_evaluate(cfg, self.model(), self.quantized(), self.evaluation_samples(), self._batched)
            if check is None:
                result["tosa_check"] = {"status": "off", "reason": "evaluation.tosa_check is false"}
            else:
                if check.result is None:  # lowering came from the cache: lower again, in memory
                    with tempfile.TemporaryDirectory() as tmp:
                        stages.run_lower(cfg, self.quantized(), Path(tmp), check)
                result["tosa_check"] = check.result
            return result

        def make(tmp: Path) -> None:
            _write_json(tmp / "info.json", self.slog.run("evaluate", work))

        entry, computed = self._entry("evaluate", make)
        if not computed:  # another process evaluated while this one waited
            self.slog.cached("evaluate")
        return _read_json(entry / "info.json")


class _TosaCheck:
    """Called by the lowering with the partitioned program; runs evaluate.tosa_check on it."""

    def __init__(self, run: _Run):
        self.run = run
        self.result: Optional[dict[str, Any]] = None

    def __call__(self, edge_program, tosa_by_payload: dict[str, bytes]) -> None:
        from . import evaluate

        try:
            self.result = evaluate.tosa_check(
                edge_program, tosa_by_payload, self.run.quantized(), self.run.evaluation_samples(), self.run.cfg.evaluation.tosa_samples
            )
        except Exception as exc:  # a check that cannot run is a finding, not a failed build
            log.debug("TOSA check failed", exc_info=True)
            self.result = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


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
        raise ConfigError(ConfigIssue("recipe", f"{recipe!r} ({recipe_path}) has uncommitted changes, so the artifact could not be traced to a commit; accepted: a committed recipe, or allow_dirty=true"))
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
    quant_info = run.quant_info

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
            "stages": run.slog.record,
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
            "lowering": {"io_layout": cfg.lowering.io_layout, "rewrites": quant_info.get("rewrites", [])},
            "delegation": lower_info["delegation"],
            "metrics": {"vela": lower_info["vela"], "accuracy": evaluation["accuracy"], "tosa_check": evaluation["tosa_check"]},
            "budget": gates,
        }

    return manifest


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))
