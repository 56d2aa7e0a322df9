"""One build: validate -> keys -> (up to date? done) -> stages -> budgets -> publish.

A rebuild whose build key is already stored (and whose stored files still check out) runs
no stage and imports neither torch nor executorch. A cache hit on a later stage skips every
stage before it (stage.Run.get). The manifest is built from the stages' typed results.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import background, data, numerics
from ..config.schema import BuildConfig
from ..config.validate import validate
from ..errors import BuildError, ConfigError, ConfigIssue, io_failure
from ..fingerprint import file_sha256, source_fingerprint, tool_versions
from ..store import provenance
from ..store.artifacts import MANIFEST_SCHEMA, Artifact, ArtifactStore
from ..store.cache import StageCache
from ..store.trust import store_key
from . import budgets, report
from .evaluate import Evaluate
from .keys import stage_keys
from .lower import Lower
from .quantize import Quantize
from .stage import Run, StageKeys, origin, stop_if_interrupted
from .stages import STAGES
from .vela import Vela

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
class Request:
    """How the build was asked for (recorded in the manifest; never in a key)."""

    recipe: str | None = None
    recipe_path: Path | None = None
    cli_overrides: list[str] = dataclasses.field(default_factory=list)


def build(
    container: dict[str, Any],
    *,
    recipe: str | None = None,
    recipe_path: Path | None = None,
    cli_overrides: list[str] | None = None,
    validated: BuildConfig | None = None,
) -> BuildResult:
    """Builds `container` (a resolved config). `validated`: what config.validate already made
    of this very container in this process (the CLI's pre-run check), so it is not validated twice."""
    try:
        return _build(container, Request(recipe, recipe_path, list(cli_overrides or [])), validated)
    except SystemExit as exc:
        # Library or user code (a dataset, a model factory) that calls sys.exit must not end
        # the process, nor a sweep: it is a failed build, named where it happened.
        raise BuildError(f"the build was stopped by sys.exit({exc.code!r}) in {origin(exc)}") from exc
    except OSError as exc:
        # A full disk, a file size limit, a failing device, a store folder removed under the
        # build: the build failed (exit 1). The paths a user gives were checked before.
        log.debug("the build stopped on an I/O error", exc_info=True)
        raise io_failure(exc) from exc


def _build(container: dict[str, Any], request: Request, validated: BuildConfig | None) -> BuildResult:
    t0 = time.perf_counter()
    background.mode()  # a bad ETHOSU_BUILD_BACKGROUND is a config error before anything runs
    cfg = validated or validate(container, default_name=request.recipe)
    store_key(cfg.store.root)  # a bad key file is a config error before anything runs (docs/trust.md)
    ArtifactStore(cfg.store.root).check_layout(cfg.name)  # so is a planted link where the artifact will go
    # The inputs by content, once per build: for the lock's drift check and the manifest (the
    # keys hash the same inputs through the same memoized functions: data.fingerprint, file_sha256).
    prints = fingerprints(cfg)
    origin = {"provenance": _provenance(cfg, request, prints), "fingerprints": prints}
    store = ArtifactStore(cfg.store.root)
    keys = stage_keys(cfg)
    existing = store.find(cfg.name, keys.build)
    if existing is not None:
        return BuildResult(existing, False, {}, time.perf_counter() - t0)
    # gc keeps every entry this build reads or writes until its manifest names them.
    with StageCache(cfg.store.root).pin(keys.as_dict().values()):
        return _compute_and_publish(cfg, keys, store, request, origin, t0)


def _compute_and_publish(
    cfg: BuildConfig, keys: StageKeys, store: ArtifactStore, request: Request, origin: dict[str, Any], t0: float
) -> BuildResult:
    # Leaving the Run waits for the cache entries being stored (stage.py): a failed store
    # fails the build before anything is published.
    with Run(cfg, keys) as run:
        if not numerics.pinned():
            log.warning(
                "this process loaded torch before ethosu_build.numerics.pin(): it computes on this host's own kernels, "
                "so its bytes may differ from another machine's (docs/recipes.md, 'Portable builds')"
            )
        # What the artifact is made of. Evaluate first: its TOSA check watches the lowering,
        # if the lowering runs in this build. The lowering carries the quantize stage's info
        # (the manifest's quantization and data sections), cached or not.
        for stage in (Evaluate, Vela, Lower):
            run.get(stage)
        sections: dict[str, Any] = {}
        for stage in STAGES:  # each stage's sections of the manifest (stage.py)
            for name, part in stage.manifest(run).items():
                sections[name] = {**sections[name], **part} if name in sections else part
        files = {path: blob for stage in STAGES for path, blob in stage.files(run).items()}
        _warn(cfg, sections)
        measured = {  # as the manifest will hold them: a breach carries them to the sweep's record
            **{k: sections[k] for k in ("metrics", "memory", "delegation", "board") if k in sections},
            "files": {"model.pte": {"size": len(files["model.pte"])}},
        }
        m = sections["metrics"]
        gates = budgets.check(  # may raise
            cfg.budget,
            sections["delegation"],
            m["vela"],
            m["accuracy"],
            sections["memory"],
            measured,
            sections.get("board"),
        )

    stop_if_interrupted()

    def manifest(version: int, listed: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema_version": MANIFEST_SCHEMA,
            "name": cfg.name,
            "version": version,
            "build_key": keys.build,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "recipe": request.recipe,
            "command_line_overrides": list(request.cli_overrides),
            "config": dataclasses.asdict(cfg),
            "fingerprints": origin["fingerprints"],
            "tools": tool_versions(),
            "platform": numerics.describe(),  # the numeric platform it computed on (numerics.py)
            "provenance": origin["provenance"],
            "files": listed,
            "stages": run.record,
            "stage_keys": keys.as_dict(),  # every stage this artifact rests on (gc keeps them)
            **sections,
            "budget": gates,
        }

    staging = store.staging(cfg.name)
    try:
        for path, blob in {**files, "config.yaml": _config_yaml(cfg).encode()}.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(blob)
        artifact, created = store.publish(
            cfg.name, keys.build, staging, manifest, report=lambda m: report.render(m, staging / "vela")
        )
    finally:
        # A Ctrl-C or a failure while assembling leaves no staging folder for gc to find later
        # (publish renames it away when it succeeds).
        shutil.rmtree(staging, ignore_errors=True)
    return BuildResult(artifact, created, run.record, time.perf_counter() - t0)


def _warn(cfg: BuildConfig, sections: dict[str, Any]) -> None:
    delegation = sections["delegation"]
    if not delegation["npu_partitions"]:
        log.warning(
            "%s: nothing runs on the NPU: the partitioner delegated no operator, so all %d ops run on the CPU "
            "(see the CPU ops and the partitioner's reasons in report.md)",
            cfg.name,
            delegation["cpu_op_count"],
        )
    for line in sections["data"]["warnings"]:
        log.warning("%s: %s", cfg.name, line)


def quantized_model(cfg: BuildConfig, model=None):
    """The quantize stage alone, from the stage cache or computed into it as a build would:
    (float model, quantized batch-1 program, batch-dynamic program or None, evaluation
    samples). For searches that measure many quantizations without lowering; `model`, if
    given, is the float model already loaded and checked for this config."""
    with Run(cfg, stage_keys(cfg), model) as run:
        quantized = run.get(Quantize)
        return run.model(), quantized.program, quantized.batched, run.samples("evaluation")


def _config_yaml(cfg: BuildConfig) -> str:
    from omegaconf import OmegaConf

    header = "# The resolved config of this artifact; it rebuilds the same bytes with the same tools.\n"
    return header + OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))


def fingerprints(cfg: BuildConfig) -> dict[str, Any]:
    """The inputs of a build, by content: what a lock pins and drift compares."""
    return {
        "model_source": source_fingerprint(cfg.model.factory["_target_"]),
        "checkpoint": file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint else None,
        "calibration_data": data.fingerprint(cfg.calibration.dataset),
        "evaluation_data": data.fingerprint(cfg.evaluation.dataset),
        "qat_data": data.fingerprint(cfg.quantization.qat.dataset) if cfg.quantization.qat else None,
    }


def _provenance(cfg: BuildConfig, request: Request, prints: dict[str, Any]) -> dict[str, Any]:
    """Git state of the recipe's repo (refusing an uncommitted recipe file unless
    allow_dirty) and drift from the recipe's lock (an error under strict)."""
    path, recipe = request.recipe_path, request.recipe
    git = provenance.git_info(path)
    # A recipe a sweep or search wrote into this store (its front, its best point) is the
    # tool's own record, not the user's source: it rebuilds by the command it states,
    # wherever the store is (a git-ignored outputs/, as a rule), and says where it came from.
    written_here = path is not None and provenance.inside(path, cfg.store.root)
    if path is not None and git and git.get("file_dirty") and not cfg.allow_dirty and not written_here:
        why = (
            "is not committed (untracked, or ignored by git)"
            if not git.get("file_tracked", True)
            else "has uncommitted changes"
        )
        raise ConfigError(
            ConfigIssue(
                "recipe",
                f"{recipe!r} ({path}) {why}, so the artifact could not be traced to a commit; "
                "accepted: a committed recipe, or allow_dirty=true",
            )
        )
    origin_info: dict[str, Any] = {"recipe_file": str(path) if path else None, "git": git, "lock": None}
    if written_here:
        origin_info["written_by"] = "ethosu-build: a recipe a sweep or search wrote into this store"
    lock = provenance.lock_path(path) if path else None
    if lock is not None and lock.is_file():
        drift = provenance.drift(provenance.read_lock(lock), tool_versions(), prints, numerics.describe())
        origin_info["lock"] = {"file": str(lock), "drift": drift}
        if drift and cfg.strict:
            raise BuildError(f"recipe {recipe!r} drifted from {lock.name} (strict=true): " + "; ".join(drift))
        for line in drift:
            log.warning("drift from %s: %s", lock.name, line)
    return origin_info
