"""Every config group option composes and validates; keys react to exactly what they should."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, compose_config

from ethosu_build.config import targets
from ethosu_build.config.schema import TARGETS
from ethosu_build.config.validate import validate
from ethosu_build.pipeline import keys as stages

CONF = ROOT / "ethosu_build" / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_conf_and_recipes_are_reachable_from_the_top_level():
    assert (ROOT / "conf" / "config.yaml").is_file()
    assert sorted(p.name for p in (ROOT / "recipes").glob("*.yaml")) == sorted(
        p.name for p in (CONF / "recipe").glob("*.yaml")
    )


def test_every_target_has_an_option():
    assert options("target") == sorted(TARGETS)


@pytest.mark.parametrize("target", TARGETS)
def test_target_option_composes_and_validates(target):
    container, _ = compose_config([f"target={target}"])
    cfg = validate(container)
    assert cfg.target.accelerator == target
    systems, modes = targets.ini_choices(None)
    assert cfg.target.system_config in systems and cfg.target.memory_mode in modes


@pytest.mark.parametrize("group", ["quantization", "overrides", "model", "budget", "recipe"])
def test_every_group_option_composes_and_validates(group):
    for option in options(group):
        container, recipe = compose_config([f"{group}={option}"])
        cfg = validate(container, default_name=recipe)
        assert cfg.name


@pytest.mark.parametrize("group", ["calibration", "evaluation"])
def test_data_options_compose(group, tmp_path):
    import numpy as np

    npz = tmp_path / "s.npz"
    np.savez(npz, inputs=np.zeros((4, 1, 8, 8), "float32"))
    folder = tmp_path / "samples"
    folder.mkdir()
    np.save(folder / "a.npy", np.zeros((1, 8, 8), "float32"))
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("L", (8, 8)).save(images / "a.png")
    paths = {"tensors": npz, "folder": folder, "images": images}
    for option in options(group):
        extra = [f"{group}.dataset.path={paths[option]}"] if option in paths else []
        validate(compose_config([f"{group}={option}", *extra])[0])


def test_overrides_multiselect_keeps_order():
    container, _ = compose_config(["overrides=[linear_a16w8,head_float]"])
    cfg = validate(container)
    assert list(cfg.overrides) == ["linear_a16w8", "head_float"]
    container, _ = compose_config(["overrides=[head_float,linear_a16w8]"])
    assert list(validate(container).overrides) == ["head_float", "linear_a16w8"]


def test_mlperf_models_calibrate_on_noise_shaped_like_their_input():
    cfg = validate(compose_config(["model=ds_cnn"])[0])
    assert cfg.calibration.dataset["_target_"] == "ethosu_build.data.random"
    assert cfg.calibration.dataset["shape"] == cfg.model.input_shape == [1, 1, 49, 10]


@pytest.mark.parametrize("recipe", options("recipe"))
def test_recipe_opens_with_its_command(recipe):
    text = (CONF / "recipe" / f"{recipe}.yaml").read_text()
    assert text.startswith("# @package _global_")
    assert f"ethosu-build recipe={recipe}" in text
    container, chosen = compose_config([f"recipe={recipe}"])
    assert validate(container, default_name=chosen).name == recipe


def test_target_facts_agree_with_executorch():
    """targets.py repeats ExecuTorch's per-family defaults and TOSA spec so that configs can
    be validated and keyed without importing it; this catches drift on an upgrade."""
    from executorch.backends.arm.ethosu import EthosUCompileSpec

    for target in TARGETS:
        spec = EthosUCompileSpec(target)
        t = validate(compose_config([f"target={target}"])[0]).target
        assert f"--system-config={targets.resolved_system_config(t)}" in spec.compiler_flags
        assert f"--memory-mode={targets.resolved_memory_mode(t)}" in spec.compiler_flags
        assert str(spec.tosa_spec) == targets.tosa_spec_string(target)
        ours = targets.compile_spec(t)
        assert ours.compiler_flags == spec.compiler_flags


def _keys(*overrides: str) -> stages.StageKeys:
    return stages.stage_keys(validate(compose_config(list(overrides))[0]))


def test_keys_ignore_where_the_store_is():
    assert _keys("store.root=a") == _keys("store.root=b")


def test_calibration_and_lowering_are_shared_by_targets_with_one_tosa_spec():
    u55_128, u55_256, u65, u85 = (
        _keys(f"target={t}") for t in ("ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u85-256")
    )
    assert u55_128.export == u85.export
    assert u55_128.quantize == u55_256.quantize == u65.quantize != u85.quantize
    assert u55_128.lower == u55_256.lower == u65.lower != u85.lower
    assert len({u55_128.vela, u55_256.vela, u65.vela, u85.vela}) == 4
    assert u55_128.evaluate == u65.evaluate  # accuracy and the TOSA check do not depend on Vela


def test_keys_follow_what_changes_the_output():
    base = _keys()
    assert _keys("calibration.num_samples=64").quantize != base.quantize
    assert _keys("calibration.num_samples=64").export == base.export
    assert _keys("target.vela_flags=['--cpu-tensor-alignment=32']").vela != base.vela
    assert _keys("target.vela_flags=['--cpu-tensor-alignment=32']").lower == base.lower
    assert _keys("target.vela_flags=['--cpu-tensor-alignment=32']").build != base.build
    assert _keys("target.cpu_qdq_kernels=portable").lower != base.lower
    assert _keys("evaluation.num_samples=100").lower == base.lower
    assert _keys("evaluation.num_samples=100").build != base.build
    assert _keys("+overrides.h={module_name: head, scheme: float}").quantize != base.quantize


def test_override_order_is_in_the_key_but_names_are_not():
    a = _keys("+overrides.x={module_name: head, scheme: float}", "+overrides.y={module_name: head, scheme: a16w8}")
    b = _keys("+overrides.y={module_name: head, scheme: float}", "+overrides.x={module_name: head, scheme: a16w8}")
    c = _keys("+overrides.x={module_name: head, scheme: a16w8}", "+overrides.y={module_name: head, scheme: float}")
    assert a == b
    assert a.quantize != c.quantize


def test_checkpoint_contents_are_in_the_key(tmp_path: Path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"one")
    k1 = _keys(f"model.checkpoint={ckpt}")
    ckpt.write_bytes(b"two")
    assert _keys(f"model.checkpoint={ckpt}").export != k1.export
