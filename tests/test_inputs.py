"""Models with several inputs of any dtype: the built-in two-input model (a float32 image and
a bool mask) on U55 and U85 with int8 and a16w8, its runtime contract, TOSA check and firmware
files; every bad input spec or item a config error naming the input. The sources that feed
them: the registry, and a rewritten input file fingerprinted again."""

from __future__ import annotations

import io
import os
import re

import numpy as np
import pytest
import torch
from conftest import ROOT, build_in_process, compose_config, run_cli

from ethosu_build import data
from ethosu_build.config.validate import validate
from ethosu_build.errors import ConfigError, ConfigIssue

LIGHT = ["model=digits_masked", "calibration.num_samples=32", "evaluation.num_samples=64", "evaluation.tosa_samples=4"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("inputs")


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "a16w8"])
@pytest.mark.parametrize("target", ["ethos-u55-128", "ethos-u85-256"])
def test_a_model_with_a_float_and_a_bool_input_builds_and_checks(target, scheme, store):
    m = build_in_process([*LIGHT, f"target={target}", f"quantization={scheme}"], store).artifact.manifest()
    inputs = m["delegation"]["runtime"]["inputs"]
    assert [(i["shape"], i["dtype"]) for i in inputs] == [([1, 1, 8, 8], "float32"), ([1, 10], "bool")]
    assert "quantization" in inputs[0] and "quantization" not in inputs[1]  # only the float input is quantized
    tosa = m["metrics"]["tosa_check"]
    assert tosa["status"] == "done" and tosa["top1_agreement"] == 100.0, tosa
    assert m["delegation"]["npu_partitions"] == 1 and m["metrics"]["accuracy"]["quantized_top1"] > 90
    where = [o for o in m["delegation"]["cpu_ops"] if o["op"] == "aten.where.self"]
    if target == "ethos-u55-128":  # U55's TOSA profile has no bool tensors: the mask is applied on the CPU
        assert where and "torch.bool input allowed" in where[0]["reason"]
    else:
        assert not where


@pytest.mark.slow
def test_the_firmware_files_describe_both_inputs(store, tmp_path):
    built = build_in_process([*LIGHT, "target=ethos-u85-256"], store).artifact
    res = run_cli(
        ["--root", str(store), "export", built.id, str(tmp_path / "fw"), "--firmware"],
        tmp_path,
        tool="ethosu-artifacts",
    )
    assert res.returncode == 0, res.stderr[-2000:]
    header = (tmp_path / "fw" / "model_io.h").read_text()
    assert "#define MODEL_INPUT_COUNT 2" in header
    assert '#define MODEL_INPUT_0_NAME "image"' in header and '#define MODEL_INPUT_1_NAME "allowed"' in header
    assert '#define MODEL_INPUT_1_DTYPE "bool"' in header and "#define MODEL_INPUT_1_QUANTIZED 0" in header
    from executorch.devtools.bundled_program.serialize import deserialize_from_flatbuffer_to_bundled_program

    bundle = deserialize_from_flatbuffer_to_bundled_program((tmp_path / "fw" / "model.bpte").read_bytes())
    case = bundle.method_test_suites[0].test_cases[0]
    with np.load(io.BytesIO((built.path / "check" / "tosa_io.npz").read_bytes())) as z:
        mask = z["input_1"][0:1]
    (image, allowed) = (v.val for v in case.inputs)
    assert image.sizes == [1, 1, 8, 8] and allowed.sizes == [1, 10]
    assert np.array_equal(np.frombuffer(bytes(allowed.data), dtype=np.bool_).reshape(1, 10), mask)


def _issues(overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as err:
        validate(compose_config(overrides)[0])
    return err.value.render()


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["model=digits_masked", "model.input_shape=[1,1,8,8]"], ["model.inputs", "model.input_shape=null"]),
        (["model=digits_masked", "model.inputs.1.dtype=float16"], ["model.inputs.1.dtype", "'float16'", "bool"]),
        (["model=digits_masked", "model.inputs.1.name=image"], ["model.inputs.1.name", "'image' is given twice"]),
        (["model=digits_masked", "model.inputs.0.dtype=int8"], ["model.inputs", "no input is float32"]),
        (["model=digits_masked", "model.inputs.1.shape=[2,10]"], ["model.inputs.1.shape", "input 'allowed'", "batch"]),
        (["model=digits_masked", "lowering.io_layout=nhwc", "model.inputs.1.dtype=float32"], ["'allowed'", "4-D"]),
    ],
)
def test_a_bad_input_spec_is_a_config_error_naming_it(overrides, fragments):
    text = _issues(overrides)
    for fragment in fragments:
        assert fragment in text, (fragment, text)


def test_a_bad_item_names_the_input_and_what_is_accepted():
    cfg = validate(compose_config(["model=digits_masked"])[0])
    specs = cfg.model.input_specs()
    image, mask = torch.zeros(1, 8, 8), torch.ones(10, dtype=torch.bool)
    cases = [
        ([image], "is one tensor, but the model takes 2 inputs"),
        ([(image, mask, 3, 4)], "is a tuple of 4 items"),
        ([(image, torch.full((10,), 2))], "input 'allowed' holds values outside bool"),
        ([(image, torch.zeros(10) + 0.5)], "input 'allowed' holds floats"),
        ([(torch.zeros(2, 8, 8), mask)], "input 'image' has shape [2, 8, 8]"),
    ]
    for items, fragment in cases:
        with pytest.raises(ConfigError) as err:
            data.take(items, 1, specs, "calibration.dataset")
        text = err.value.render()
        assert fragment in text and "calibration.dataset" in text and "allowed bool [10]" in text, text
    # flat, flat with a label, nested with a label: the same samples
    for items in ([(image, mask)], [(image, mask, 7)], [((image, mask), 7)]):
        s = data.take(items, 1, specs)
        assert [x.dtype for x in s.x] == [torch.float32, torch.bool] and s.x[1].shape == (1, 10)


def test_random_draws_each_input_in_its_dtype():
    specs = [
        {"shape": [1, 4], "dtype": "float32"},
        {"shape": [1, 3], "dtype": "int8"},
        {"shape": [1, 2], "dtype": "bool"},
        {"shape": [1], "dtype": "int32"},
    ]
    ds = data.random(inputs=specs, size=64, seed=3)
    x, q, b, n = ds[5]
    assert x.dtype == torch.float32 and q.dtype == torch.int8 and b.dtype == torch.bool and n.dtype == torch.int32
    assert all(torch.equal(a, c) for a, c in zip(ds[5], data.random(inputs=specs, size=64, seed=3)[5]))
    assert (
        -1 <= float(torch.stack([ds[i][0] for i in range(64)]).min())
        and len({bool(ds[i][2][0]) for i in range(64)}) == 2
    )


def test_the_file_sources_take_one_array_per_input(tmp_path):
    """tensors: one key per input; folder: a .pt per sample holding a tuple."""
    cfg = validate(compose_config(["model=digits_masked"])[0])
    specs = cfg.model.input_specs()
    images, masks = np.random.RandomState(0).rand(6, 1, 8, 8).astype("float32"), np.eye(10, dtype=bool)[:6]
    np.savez(tmp_path / "two.npz", image=images, allowed=masks, labels=np.arange(6))
    s = data.take(data.tensors(str(tmp_path / "two.npz"), inputs_key=["image", "allowed"]), 6, specs)
    assert np.array_equal(s.x[0].numpy(), images) and np.array_equal(s.x[1].numpy(), masks)
    assert s.y.tolist() == list(range(6))
    (tmp_path / "samples").mkdir()
    for i in range(3):
        torch.save((torch.from_numpy(images[i]), torch.from_numpy(masks[i])), tmp_path / "samples" / f"{i}.pt")
    s = data.take(data.folder(str(tmp_path / "samples")), 3, specs)
    assert np.array_equal(s.x[1].numpy(), masks[:3]) and s.y is None


def test_every_built_in_source_is_registered_where_the_configs_name_it(monkeypatch):
    """Each `_target_: ethosu_build.data.<name>` of the built-in configs is a registered source,
    each registered source is the function Hydra finds under that name, and the registry alone
    decides a source's checks: a new entry's `path` check runs with no other change."""
    from hydra.utils import get_method

    named = set()
    for yaml in (ROOT / "ethosu_build" / "conf").rglob("*.yaml"):
        named |= set(re.findall(r"_target_: ethosu_build\.data\.(\w+)", yaml.read_text()))
    assert named and named <= set(data.SOURCES), named - set(data.SOURCES)
    for name, source in data.SOURCES.items():
        assert get_method(source.target) is source.make is getattr(data, name)
    refuse = data.Source("toy", None, path_issues=lambda key, path, ds: [ConfigIssue(key, f"{path!r} is no toy")])
    monkeypatch.setitem(data.SOURCES, "toy", refuse)
    issues = data.static_issues("calibration.dataset", {"_target_": "ethosu_build.data.toy", "path": "x"})
    assert issues == [ConfigIssue("calibration.dataset.path", "'x' is no toy")]


def test_an_input_file_rewritten_at_once_is_fingerprinted_again(tmp_path):
    """A file rewritten at once, same size, its mtime set back, is fingerprinted again: its ctime
    moved or, within the same timestamp tick, it was too fresh to be memoized (data/fingerprints.py)."""
    path = tmp_path / "samples.npz"
    np.savez(path, inputs=np.zeros((4, 1, 8, 8), np.float32))
    dataset = {"_target_": "ethosu_build.data.tensors", "path": str(path)}
    first, stat = data.fingerprint(dataset), path.stat()
    np.savez(path, inputs=np.ones((4, 1, 8, 8), np.float32))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and data.fingerprint(dataset) != first
