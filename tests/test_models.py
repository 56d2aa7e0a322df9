"""Every built-in model builds int8 for ethos-u55-128 and ethos-u85-256 (real Vela runs), and
its Vela totals are the sums of Vela's own CSVs."""

from __future__ import annotations

import pytest
from conftest import FEW_EVALUATED, build_in_process, csv_rows

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
        [f"model={model}", f"target={target}", "quantization=int8", "calibration.num_samples=32", *FEW_EVALUATED],
        models_root,
    )
    m = r.artifact.manifest()
    assert m["name"] == model and m["config"]["target"]["accelerator"] == target
    assert m["files"]["model.pte"]["sha256"] == file_sha256(r.artifact.path / "model.pte")
    assert m["delegation"]["npu_partitions"] >= 1 and m["delegation"]["npu_ops"] > 0
    assert m["quantization"]["applied"]["ops_by_scheme"].get("int8", 0) > 0
    _assert_vela_totals_are_the_sums_of_the_csvs(r.artifact, m)
    if model == "ds_cnn" and target == "ethos-u55-128":  # U55 leaves the average pool on the CPU: two NPU graphs
        assert m["delegation"]["npu_partitions"] == 2
        assert any("avg_pool" in op["op"] for op in m["delegation"]["cpu_ops"])
    # the TOSA check runs the deployed program, however many partitions it has
    tosa = m["metrics"]["tosa_check"]
    assert tosa["status"] == "done" and tosa["max_lsb_diff"] <= 1 and tosa["top1_agreement"] == 100.0


def _assert_vela_totals_are_the_sums_of_the_csvs(artifact, m) -> None:
    vela, rows = m["metrics"]["vela"], csv_rows(artifact.path / "vela" / "summary.csv")
    assert len(rows) == vela["total"]["partitions"] == m["delegation"]["npu_partitions"] == len(vela["partitions"])
    assert vela["total"]["cycles"] == sum(int(float(row["cycles_total"])) for row in rows)
    assert vela["total"]["sram_kib"] == pytest.approx(sum(float(row["sram_memory_used"]) for row in rows))
    assert vela["total"]["off_chip_flash_kib"] == pytest.approx(
        sum(float(row["off_chip_flash_memory_used"]) for row in rows)
    )
    assert vela["total"]["macs"] == sum(int(float(row["nn_macs"])) for row in rows)
    clock = float(rows[0]["core_clock"])
    assert vela["total"]["inference_ms"] == pytest.approx(vela["total"]["cycles"] / clock * 1000)
    layers = csv_rows(artifact.path / "vela" / "per_layer.csv")
    assert vela["total"]["npu_ops"] == len(layers) > 0
    assert {row["partition"] for row in layers} == {str(i) for i in range(len(rows))}
