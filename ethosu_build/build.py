"""One build: validate -> keys -> (up to date? done) -> stages, each cached -> store.

A rebuild whose build key is already stored runs no stage and imports neither torch nor
executorch. A cache hit on a later stage skips every stage before it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from . import data, stages
from .cache import StageCache
from .errors import BuildError, ConfigError
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
    cli_overrides: Optional[list[str]] = None,
) -> BuildResult:
    t0 = time.perf_counter()
    cfg = validate(container, default_name=recipe)
    store = ArtifactStore(cfg.store.root)
    keys = stages.stage_keys(cfg)
    existing = store.find(cfg.name, keys.build)
    if existing is not None:
        return BuildResult(existing, False, {}, time.perf_counter() - t0)

    cache = StageCache(cfg.store.root)
    slog = _StageLog(keys)
    pte, lower_info, quant_info = _run_stages(cfg, cache, slog)

    staging = store.staging(cfg.name)
    (staging / "model.pte").write_bytes(pte)
    (staging / "config.yaml").write_text(_config_yaml(cfg))
    manifest = _manifest_fn(cfg, keys, recipe, cli_overrides or [], slog.record, quant_info, lower_info)
    artifact, created = store.publish(cfg.name, keys.build, staging, manifest)
    return BuildResult(artifact, created, slog.record, time.perf_counter() - t0)


def _run_stages(cfg: BuildConfig, cache: StageCache, slog: _StageLog) -> tuple[bytes, dict, dict]:
    keys = slog.keys
    entry = cache.get(keys.lower)
    if entry is not None:
        slog.cached("lower")
        return (entry / "model.pte").read_bytes(), _read_json(entry / "info.json"), _read_json(entry / "quantize.json")

    entry = cache.get(keys.quantize)
    if entry is not None:
        slog.cached("quantize")
        quantized = stages.load_program(entry / "program.pt2")
        quant_info = _read_json(entry / "info.json")
    else:
        quantized, quant_info = _quantize(cfg, cache, slog)

    pte, delegation, vela_console = slog.run("lower", lambda: stages.run_lower(cfg, quantized))
    log.debug("Vela output:\n%s", vela_console)
    lower_info = {"delegation": delegation}
    with cache.put(keys.lower, "lower") as tmp:
        (tmp / "model.pte").write_bytes(pte)
        _write_json(tmp / "info.json", lower_info)
        _write_json(tmp / "quantize.json", quant_info)
    return pte, lower_info, quant_info


def _quantize(cfg: BuildConfig, cache: StageCache, slog: _StageLog):
    from . import quantize
    from .validate import check_model, check_override_matches, load_model

    keys = slog.keys
    model = load_model(cfg)
    check_model(cfg, model)
    entry = cache.get(keys.export)
    if entry is not None:
        slog.cached("export")
        programs = {
            kind: stages.load_program(entry / f"{kind}.pt2") if (entry / f"{kind}.pt2").is_file() else None
            for kind in ("static", "dynamic")
        }
    else:
        programs = slog.run("export", lambda: stages.run_export(model, cfg.model.input_shape))
        with cache.put(keys.export, "export") as tmp:
            for kind, program in programs.items():
                if program is not None:
                    stages.save_program(program, tmp / f"{kind}.pt2")

    matches = quantize.override_matches(programs["static"].graph_module, cfg.overrides)
    check_override_matches(matches, cfg)
    samples = data.take(data.instantiate(cfg.calibration.dataset), cfg.calibration.num_samples, cfg.model.input_shape)
    quantized, info = slog.run("quantize", lambda: stages.run_quantize(cfg, programs, samples))
    info["override_matches"] = matches
    with cache.put(keys.quantize, "quantize") as tmp:
        stages.save_program(quantized, tmp / "program.pt2")
        _write_json(tmp / "info.json", info)
    return quantized, info


def _config_yaml(cfg: BuildConfig) -> str:
    from omegaconf import OmegaConf

    header = "# The resolved config of this artifact; it rebuilds the same bytes with the same tools.\n"
    return header + OmegaConf.to_yaml(OmegaConf.create(dataclasses.asdict(cfg)))


def _fingerprints(cfg: BuildConfig) -> dict[str, Any]:
    return {
        "model_source": source_fingerprint(cfg.model.factory["_target_"]),
        "checkpoint": file_sha256(cfg.model.checkpoint) if cfg.model.checkpoint else None,
        "calibration_data": data.fingerprint(cfg.calibration.dataset),
        "evaluation_data": data.fingerprint(cfg.evaluation.dataset),
    }


def _manifest_fn(cfg, keys, recipe, cli_overrides, stage_record, quant_info, lower_info):
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
            "fingerprints": _fingerprints(cfg),
            "tools": tool_versions(),
            "files": files,
            "stages": stage_record,
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
            },
            "delegation": lower_info["delegation"],
        }

    return manifest


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True))
