"""Every built-in model builds int8 for ethos-u55-128 and ethos-u85-256 (real Vela runs)."""

from __future__ import annotations

import pytest
from conftest import build_in_process

from ethosu_build.fingerprint import file_sha256

MODELS = ["digits_cnn", "ds_cnn", "resnet8", "deep_autoencoder", "mobilenet_v1_025"]
TARGETS = ["ethos-u55-128", "ethos-u85-256"]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")  # shared: the export stage is reused across targets


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("target", TARGETS)
def test_builtin_model_builds(model, target, models_root):
    r = build_in_process(
        [f"model={model}", f"target={target}", "quantization=int8", "calibration.num_samples=32"], models_root
    )
    m = r.artifact.manifest()
    assert m["name"] == model and m["config"]["target"]["accelerator"] == target
    assert m["files"]["model.pte"]["sha256"] == file_sha256(r.artifact.path / "model.pte")
    assert m["delegation"]["npu_partitions"] >= 1 and m["delegation"]["npu_ops"] > 0
    assert m["quantization"]["applied"]["ops_by_scheme"].get("int8", 0) > 0
