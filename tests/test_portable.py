"""Recipes rebuild the same bytes on every machine: simulated instruction sets and thread
counts give one sha256; the default recipe gives the sha its docs publish; a lock names a
platform that changed; and every key of a build changes what the build holds, or stays
out of the build key."""

from __future__ import annotations

import dataclasses
import json
import re
import typing

import pytest
from conftest import SIMULATED_MACHINES, build_in_process, compose_config, manifest, published_sha, run_cli

from ethosu_build.config.schema import BuildConfig
from ethosu_build.config.validate import validate
from ethosu_build.fingerprint import file_sha256
from ethosu_build.pipeline.keys import stage_keys


@pytest.mark.slow
def test_the_default_recipe_builds_the_same_bytes_on_a_simulated_machine(tmp_path, shared_root):
    """The same bytes as this host's build, on SSE4.1 with one thread; every committed recipe
    is built on a simulated machine too, against its published sha (test_provenance.py)."""
    res = run_cli(["store.root=store", "allow_dirty=true"], tmp_path, env=SIMULATED_MACHINES["sse4.1, 1 thread"])
    assert res.returncode == 0, res.stderr[-2000:]
    (pte,) = (tmp_path / "store" / "artifacts").rglob("model.pte")
    platform = manifest(pte.parent)["platform"]
    assert platform["pinned"] and platform["torch_cpu_capability"] == "default" and platform["threads"] == 1
    here = build_in_process([], shared_root).artifact  # this host, in this process
    assert file_sha256(pte) == file_sha256(here.path / "model.pte")


def test_the_default_recipe_builds_its_published_bytes(shared_root):
    """A change of the default build's bytes is always deliberate: it changes the docs too."""
    built = build_in_process([], shared_root).artifact
    assert file_sha256(built.path / "model.pte").startswith(published_sha("ethosu-build"))


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_a_lock_names_the_platform_that_changed(user_repo):
    args = ["hydra.searchpath=[file://conf]", "recipe=tiny_u85", "store.root=store"]
    assert run_cli(["lock", "tiny_u85", "--searchpath", "conf"], user_repo, tool="ethosu-artifacts").returncode == 0
    lock = user_repo / "conf" / "recipe" / "tiny_u85.lock.json"
    content = json.loads(lock.read_text())
    assert content["platform"]["pinned"] is True and content["platform"]["threads"] == 1
    content["platform"]["machine"] = "aarch64"  # locked on another kind of machine
    lock.write_text(json.dumps(content))
    strict = run_cli([*args, "strict=true", "allow_dirty=true"], user_repo)
    assert strict.returncode == 1 and "platform machine: aarch64 then" in strict.stderr, strict.stderr[-2000:]
    warned = run_cli([*args, "allow_dirty=true"], user_repo)
    assert warned.returncode == 0 and "platform machine: aarch64 then" in warned.stdout + warned.stderr


# --- every key does what its name says --------------------------------------------------------

# Each key of the schema and how a change of it shows: "bytes" (model.pte), "measured" (the
# manifest's measurements or gates), "contract" (what the manifest and the firmware headers
# tell the device, e.g. its preprocessing), or None (not in the build key: it changes nothing
# a build holds). A change the key's own config needs comes first in the list.
# One epoch of quantization-aware training on 32 samples: what the QAT keys change.
QAT = ["quantization=int8_qat", "quantization.qat.epochs=1", "quantization.qat.num_samples=32"]
KEYS: dict[str, tuple[str | None, list]] = {
    "name": (None, ["name=other"]),
    "model.name": (None, ["model.name=other"]),
    "model.factory": ("bytes", ["+model.factory.pretrained=false"]),
    "model.checkpoint": ("bytes", ["+model.factory.pretrained=false", "model.checkpoint=@weights"]),
    "model.input_shape": ("bytes", ["model=resnet8", "model.input_shape=[1,3,16,16]"]),
    "model.inputs": (
        "bytes",
        ["model=resnet8", ("model.input_shape=null", "model.inputs=[{name: x, shape: [1,3,16,16], dtype: float32}]")],
    ),
    # the digits source reads no images: the steps reach the manifest and model_io.h only
    "model.preprocess": ("contract", ["model.preprocess=[{op: scale, divisor: 16}]"]),
    "target.accelerator": ("bytes", ["target.accelerator=ethos-u55-256"]),
    "target.system_config": ("bytes", ["target.system_config=Ethos_U55_Deep_Embedded"]),
    "target.memory_mode": ("bytes", ["target.memory_mode=Sram_Only"]),
    "target.config_ini": ("bytes", ["target.config_ini=@ini"]),
    "target.optimise": ("bytes", ["target.optimise=Size"]),
    "target.arena_cache_size": ("bytes", ["target.arena_cache_size=65536"]),
    "target.vela_flags": ("bytes", ["target.vela_flags=['--cpu-tensor-alignment=32']"]),
    "target.cpu_qdq_kernels": ("bytes", ["target.cpu_qdq_kernels=portable"]),
    "lowering.io_layout": ("bytes", ["lowering.io_layout=nhwc"]),
    "lowering.rewrites": ("bytes", ["model=ds_cnn", "lowering.rewrites=[avg_pool_crop]"]),
    "quantization.scheme": ("bytes", ["quantization.scheme=a16w8"]),
    "quantization.per_channel": ("bytes", ["quantization.per_channel=false"]),
    "quantization.io": ("bytes", ["quantization.io=uint8"]),
    "quantization.observer": ("bytes", ["quantization.observer=minmax"]),
    # Each QAT key against the same short training (QAT below): the last override wins.
    "quantization.qat": ("bytes", [tuple(QAT)]),  # against post-training quantization
    "quantization.qat.dataset": (
        "bytes",
        [*QAT, "quantization.qat.dataset={_target_: ethosu_build.data.digits, split: all}"],
    ),
    "quantization.qat.num_samples": ("bytes", [*QAT, "quantization.qat.num_samples=33"]),
    "quantization.qat.batch_size": ("bytes", [*QAT, "quantization.qat.batch_size=16"]),
    # several batches, so their order matters
    "quantization.qat.seed": ("bytes", [*QAT, "quantization.qat.batch_size=8", "quantization.qat.seed=1"]),
    "quantization.qat.epochs": ("bytes", [*QAT, "quantization.qat.epochs=2"]),
    "quantization.qat.optimizer": ("bytes", [*QAT, "quantization.qat.optimizer=sgd"]),
    "quantization.qat.lr": ("bytes", [*QAT, "quantization.qat.lr=1e-3"]),
    "quantization.qat.loss": ("bytes", [*QAT, "quantization.qat.loss=distill"]),
    "overrides": ("bytes", ["overrides=head_float"]),
    "calibration.dataset": ("bytes", ["calibration.dataset.split=all"]),
    "calibration.num_samples": ("bytes", ["calibration.num_samples=64"]),
    # HistogramObserver merges one histogram per call: 8 or 128 per call happen to merge to
    # digits' ranges of 32 per call, batches of 5 do not.
    "calibration.batch_size": ("bytes", ["calibration.batch_size=5"]),
    "calibration.seed": ("bytes", ["calibration.seed=3"]),
    "evaluation.dataset": ("measured", ["evaluation.dataset.split=train"]),
    "evaluation.num_samples": ("measured", ["evaluation.num_samples=100"]),
    "evaluation.batch_size": (None, ["evaluation.batch_size=7"]),
    "evaluation.seed": ("measured", ["evaluation.num_samples=100", "evaluation.seed=3"]),
    "evaluation.tosa_check": ("measured", ["evaluation.tosa_check=false"]),
    "evaluation.tosa_samples": ("measured", ["evaluation.tosa_samples=8"]),
    "evaluation.per_layer": ("measured", ["evaluation.per_layer=true"]),
    # a board: corstone-300 is the default target's NPU and Vela settings, so its bytes are the
    # default build's; what it adds is the fit (the board section and the board_fit budget)
    "board": ("measured", ["board=corstone-300"]),
    "board.name": ("board", ["board=corstone-300", "board.name=mine"]),
    "board.npu": ("bytes", ["board=corstone-300", ("board.npu=ethos-u55-256", "target=ethos-u55-256")]),
    "board.cpu": ("board", ["board=corstone-300", "board.cpu=cortex-m85"]),
    "board.cpu_clock_hz": ("board", ["board=corstone-300", "board.cpu_clock_hz=100000000"]),
    "board.memory_mode": ("bytes", ["board=corstone-300", "board.memory_mode=Sram_Only"]),
    "board.memory_modes": (
        "board",
        ["board=corstone-300", "board.memory_mode=auto", "board.memory_modes=[Sram_Only]"],
    ),
    "board.regions": ("board", ["board=corstone-300", "board.regions.SRAM.size=1000000"]),
    "board.sources": (None, ["board=corstone-300", "board.sources=[elsewhere]"]),  # documentation
    "budget.max_cpu_ops": ("measured", ["budget.max_cpu_ops=10"]),
    "budget.max_sram_kib": ("measured", ["budget.max_sram_kib=1000"]),
    "budget.max_flash_kib": ("measured", ["budget.max_flash_kib=1000"]),
    "budget.max_planned_kib": ("measured", ["budget.max_planned_kib=1000"]),
    "budget.max_accuracy_drop": ("measured", ["budget.max_accuracy_drop=50"]),
    "budget.max_inference_ms": ("measured", ["budget.max_inference_ms=100"]),
    "store.root": (None, ["store.root=@elsewhere"]),
    "allow_dirty": (None, ["allow_dirty=true"]),
    "strict": (None, ["strict=true"]),
    "tracking.backend": (None, ["tracking.backend=mlflow"]),
    "tracking.uri": (None, ["tracking=mlflow", "tracking.uri=http://127.0.0.1:5000"]),
    "tracking.experiment": (None, ["tracking=mlflow", "tracking.experiment=other"]),
    "tracking.log_model": (None, ["tracking=mlflow", "tracking.log_model=false"]),
    "objective": (None, ["objective={inference_ms: min, sqnr_db: max}"]),  # what a sweep optimizes
}
# The configs a key's change is measured against (the keys of QAT and models need their own).
BASE = ["calibration.num_samples=40", "evaluation.num_samples=40", "evaluation.tosa_samples=4"]


def _leaf_keys(tp, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        # a mapping or list of groups (overrides, model.inputs) is one key
        one_key = typing.get_origin(tp) in (dict, list)
        sub = [] if one_key else [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        sub = sub or [tp]
        if dataclasses.is_dataclass(sub[0]):  # a group of keys; an optional one is a key of its own too
            keys += ([key] if key in KEYS else []) + _leaf_keys(sub[0], key + ".")
        else:
            keys.append(key)
    return keys


def test_every_key_of_the_schema_is_classified():
    assert sorted(_leaf_keys(BuildConfig)) == sorted(KEYS)


def _overrides(changes: list, tmp_path) -> list:
    from ethosu_build.config.targets import resolve_config_ini
    from ethosu_build.models import DIGITS_CNN_WEIGHTS

    ini = tmp_path / "my_vela.ini"
    ini.write_text(resolve_config_ini(None).read_text())  # Vela's own .ini, at another path
    values = {"@weights": str(DIGITS_CNN_WEIGHTS), "@ini": str(ini), "@elsewhere": str(tmp_path / "elsewhere")}

    def fill(c: str) -> str:
        return re.sub(r"@\w+", lambda m: values[m.group(0)], c)

    return [tuple(fill(o) for o in c) if isinstance(c, tuple) else fill(c) for c in changes]


def _flat(changes: list) -> list[str]:
    """The overrides of a change list: an item may be a tuple of overrides made together."""
    return [o for c in changes for o in (c if isinstance(c, tuple) else (c,))]


def _base_for(changes: list) -> list[str]:
    """The config the change is compared against: BASE plus what the change needs first
    (every item but the last, e.g. the model or QAT it applies to)."""
    return [*BASE, *_flat(changes[:-1])]


def _what_it_holds(m: dict) -> dict:
    return {
        "bytes": m["files"]["model.pte"]["sha256"],
        "measured": [m["metrics"], m["budget"]],
        "board": m.get("board"),  # the fit on a board and its CPU estimate (placement.py, cpu_cost.py)
        "contract": m["data"]["preprocess"],
    }


@pytest.mark.parametrize("key", sorted(k for k, (kind, _) in KEYS.items() if kind is None))
def test_a_key_that_changes_nothing_is_not_in_the_build_key(key, tmp_path):
    changes = _overrides(KEYS[key][1], tmp_path)
    base = stage_keys(validate(compose_config([*_base_for(changes), f"store.root={tmp_path}"])[0]))
    changed = stage_keys(validate(compose_config([*BASE, *_flat(changes), f"store.root={tmp_path}"])[0]))
    assert base.build == changed.build


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(k for k, (kind, _) in KEYS.items() if kind is not None))
def test_a_key_in_the_build_key_changes_what_the_build_holds(key, shared_root, tmp_path):
    kind, changes = KEYS[key]
    changes = _overrides(changes, tmp_path)
    base = _what_it_holds(build_in_process(_base_for(changes), shared_root).artifact.manifest())
    changed = _what_it_holds(build_in_process([*BASE, *_flat(changes)], shared_root).artifact.manifest())
    assert changed[kind] != base[kind], key
