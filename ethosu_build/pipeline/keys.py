"""Stage versions and keys, computed without importing torch or executorch.

Each stage key is the sha256 of canonical JSON of the stage name and version, the config
fields that change its output, the keys of the stages it consumes and the tool versions.
Paths, logging and launcher settings never enter a key; inputs enter by content
(data.fingerprint, source_fingerprint, file hashes). The build key combines everything an
artifact holds: same key, same version.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import data
from ..config import targets
from ..config.schema import BuildConfig
from ..fingerprint import file_sha256, key_of, source_fingerprint, tool_versions_for_key

# Bump a stage's version when its code changes what it produces.
# quantize 6, evaluate 6: their results summarize the samples they saw (data.summary).
STAGE_VERSIONS = {"export": 3, "quantize": 6, "lower": 7, "vela": 1, "evaluate": 6, "build": 3}


@dataclass(frozen=True)
class StageKeys:
    export: str
    quantize: str
    lower: str
    vela: str
    evaluate: str
    build: str  # the artifact's identity: same key, same version

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def _dataset_key(ds, batch_size: bool) -> dict[str, Any]:
    """The samples a stage sees (and, for calibration, how they are batched: observers merge
    per call). evaluation.batch_size is speed only: not in a key."""
    key = {"data": data.fingerprint(ds.dataset), "num_samples": ds.num_samples, "seed": ds.seed}
    return {**key, "batch_size": ds.batch_size} if batch_size else key


def stage_keys(cfg: BuildConfig) -> StageKeys:
    m, t = cfg.model, cfg.target
    export = key_of(
        {
            "stage": "export",
            "v": STAGE_VERSIONS["export"],
            "tools": tool_versions_for_key(),
            "factory": m.factory,
            "source": source_fingerprint(m.factory["_target_"]),
            "checkpoint": file_sha256(m.checkpoint) if m.checkpoint else None,
            # shapes and dtypes, however given (input_shape or inputs); names reach no program
            "inputs": [{"shape": list(s.shape), "dtype": s.dtype} for s in m.input_specs()],
        }
    )
    quantization = dataclasses.asdict(cfg.quantization)
    qat = quantization.pop("qat")
    quantize_inputs = {
        "stage": "quantize",
        "v": STAGE_VERSIONS["quantize"],
        "export": export,
        # The quantizer's passes depend on the target only through its TOSA specification,
        # so targets that share one share the calibrated model.
        "tosa_spec": targets.tosa_spec_string(t.accelerator),
        "quantization": quantization,
        "rewrites": cfg.lowering.rewrites,  # applied to the float graph before the quantizer sees it
        # Order matters (a later override wins); the entries' names do not.
        "overrides": [dataclasses.asdict(e) for e in cfg.overrides.values()],
        "calibration": _dataset_key(cfg.calibration, batch_size=True),
    }
    if qat is not None:  # the ranges come from training, not from the calibration set
        del quantize_inputs["calibration"]
        quantize_inputs["qat"] = {**qat, "data": data.fingerprint(qat["dataset"])}
    quantize = key_of(quantize_inputs)
    lower = key_of(
        {
            "stage": "lower",
            "v": STAGE_VERSIONS["lower"],
            "quantize": quantize,
            # The partitioner and the TOSA passes see the target only through its TOSA spec.
            "tosa_spec": targets.tosa_spec_string(t.accelerator),
            "cpu_qdq_kernels": t.cpu_qdq_kernels,
            "io_layout": cfg.lowering.io_layout,
        }
    )
    vela = key_of(
        {
            "stage": "vela",
            "v": STAGE_VERSIONS["vela"],
            "lower": lower,
            "accelerator": t.accelerator,
            "system_config": targets.resolved_system_config(t),
            "memory_mode": targets.resolved_memory_mode(t),
            "config_ini": t.config_ini,
            "config_ini_sha256": file_sha256(targets.resolve_config_ini(t.config_ini)),
            "vela_flags": targets.vela_flags(t),
        }
    )
    # Accuracy needs the quantized model, the TOSA check the lowered partitions: not Vela.
    evaluate = key_of(
        {
            "stage": "evaluate",
            "v": STAGE_VERSIONS["evaluate"],
            "lower": lower,
            "evaluation": _dataset_key(cfg.evaluation, batch_size=False),
            "tosa_check": cfg.evaluation.tosa_check,
            "tosa_samples": cfg.evaluation.tosa_samples,
        }
    )
    build = key_of(
        {
            "stage": "build",
            "v": STAGE_VERSIONS["build"],
            "evaluate": evaluate,
            "vela": vela,
            "budget": dataclasses.asdict(cfg.budget),
            # what a device does to a raw frame: the manifest and the firmware headers carry it,
            # whether or not a data source of this build applied it
            "preprocess": m.preprocess,
        }
    )
    return StageKeys(export, quantize, lower, vela, evaluate, build)
