"""Where the accuracy goes (`ethosu-artifacts layers`, pipeline/layers.py): per quantized point,
the quantized model against the float one, from the stage cache, on the build's evaluation
samples."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from conftest import build_in_process, run_cli

PLANTED = [
    "model.factory._target_=zoo_models.planted_outlier",
    "model.name=planted",
    "model.input_shape=[1,1,8,8]",
    "calibration.num_samples=64",
    "evaluation.num_samples=64",
    "evaluation.tosa_samples=1",
]


def _layers(root, ref: str, tmp_path, *more: str) -> dict:
    res = run_cli(["--root", str(root), "layers", ref, "--json", *more], tmp_path, tool="ethosu-artifacts",
                  env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _entries(root) -> set[str]:
    return {p.name for p in (root / "cache").glob("*/*") if p.is_dir()}


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_the_output_point_is_the_builds_sqnr_and_inside_the_partition_the_pt2e_models(digits_store, tmp_path):
    """On the digits CNN: every quantized point compared; the last one, the model's output, has
    the build's own SQNR on the same samples. --deployed: inside the NPU partition, each point's
    TOSA tensor (named by the Arm backend's debug map, read from the reference model's dump) is
    within 1 LSB of the PT2E model's codes on the TOSA check's samples, the last one differs by
    what the TOSA check found at the output, and every point is accounted for. The stage cache
    gains nothing."""
    m = json.loads((digits_store / "artifacts" / "digits_cnn" / "v1" / "manifest.json").read_text())
    before = _entries(digits_store)
    d = _layers(digits_store, "digits_cnn/v1", tmp_path, "--deployed")
    assert _entries(digits_store) == before
    assert d["compared"] == d["points"] == len(d["layers"]) > 3
    assert d["samples"] == m["metrics"]["accuracy"]["samples"]
    assert d["layers"][-1]["accumulated_sqnr_db"] == m["metrics"]["accuracy"]["sqnr_db"]
    for r in d["layers"]:
        assert 0 < r["codes_used"] <= 1 and 0 <= r["clipped"] <= 1 and r["bits"] == 8
        # rounding alone where nothing is clipped: rmse/scale near 1/sqrt(12); clipping adds to it
        assert r["rmse_per_scale"] > 0.1 and (r["clipped"] > 0 or r["rmse_per_scale"] < 0.6), r
    convs = [r for r in d["layers"] if r["module"].startswith("blocks") and r["weight_worst_channel_sqnr_db"]]
    assert convs and all(30 < r["weight_worst_channel_sqnr_db"] < 80 for r in convs)
    # fewer samples: the first N
    assert _layers(digits_store, "digits_cnn/v1", tmp_path, "--samples", "8")["samples"] == 8

    inside, tosa = d["deployed"], m["metrics"]["tosa_check"]
    assert inside["status"] == "done" and inside["samples"] == tosa["samples"] and inside["partitions"] == 1
    compared = inside["compared"]
    assert len(compared) >= 5 and {r["op"] for r in compared} >= {"RESCALE", "MAX_POOL2D"}
    assert all(r["max_lsb_diff"] <= 1 and 0 <= r["differing_share"] <= 1 for r in compared), compared
    assert compared[-1]["module"] == "head" and compared[-1]["max_lsb_diff"] == tosa["max_lsb_diff"]
    assert len(compared) + sum(map(len, inside["not_compared"].values())) == inside["points"]
    assert inside["not_compared"]["on_cpu"] == ["x"]  # the CPU quantizes the input


def test_inside_a_partition_nothing_is_compared_unless_the_flatbuffers_are_the_artifacts(digits_store):
    """The debug lowering names the operators of its own flatbuffers: where they are not the
    artifact's, byte for byte, the comparison says so instead of comparing."""
    from ethosu_build.pipeline import deployed_layers, layers

    m = json.loads((digits_store / "artifacts" / "digits_cnn" / "v1" / "manifest.json").read_text())
    cfg, stages = layers.stored_stages(m, digits_store)
    tosa = bytearray((digits_store / "artifacts" / "digits_cnn" / "v1" / "vela" / "part0.tosa").read_bytes())
    tosa[len(tosa) // 2] ^= 1  # one bit of another program
    d = deployed_layers.compare(cfg, stages["quantize"].program, [bytes(tosa)], layers.evaluation_samples(cfg, 1), 1)
    assert d["status"] == "not compared" and "differ from the artifact's" in d["reason"]
    assert "Not compared: the debug lowering" in "\n".join(deployed_layers.report_section(d))


def test_bad_arguments_and_a_missing_cache_are_refused(store_copy, tmp_path):
    res = run_cli(["--root", str(store_copy), "layers", "digits_cnn/v1", "--samples", "0"], tmp_path,
                  tool="ethosu-artifacts")  # fmt: skip
    assert res.returncode == 2 and "--samples: 0 is not a count" in res.stderr
    res = run_cli(["--root", str(store_copy), "layers", "nosuch/v1"], tmp_path, tool="ethosu-artifacts")
    assert res.returncode == 2 and "nosuch" in res.stderr
    m = json.loads((store_copy / "artifacts" / "digits_cnn" / "v1" / "manifest.json").read_text())
    key = m["stage_keys"]["quantize"]
    shutil.rmtree(store_copy / "cache" / key[:2] / key)  # what rebuilding would need: refused, not rebuilt
    res = run_cli(["--root", str(store_copy), "layers", "digits_cnn/v1"], tmp_path, tool="ethosu-artifacts")
    assert res.returncode == 2 and "holds no quantize entry" in res.stderr, res.stderr[-2000:]
    assert not (store_copy / "cache" / key[:2] / key).exists()


@pytest.mark.slow  # real builds of fixes / DS-CNN: CI runs them
def test_a_planted_layer_is_named_first_and_its_fix_as_a_recipe_recovers_the_sqnr_at_the_cost_stated(tmp_path):
    """b2's convolution has an output channel 100 times the others: its activation's one int8
    scale leaves the other channels few codes. The layer's own error is the largest, and its
    point is b2's. Its fixes, each a real build: 16 bits where its activation is computed and
    read recovers most of what the layer lost; the recipe written for it rebuilds exactly the
    SQNR and the Vela cycles the table stated. (One test: the fixes build on the diagnosis.)"""
    root = tmp_path / "store"
    build_in_process(PLANTED, root)
    d = _layers(root, "planted", tmp_path, "--fixes", "1", "--write-recipe", "planted_fixed", "--recipe-dir",
                str(tmp_path / "rc"), "--plot", str(tmp_path / "layers.png"))  # fmt: skip
    first = d["largest_local_errors"][0]
    assert first["module"].startswith("b2."), d["largest_local_errors"]
    healthy = [r for r in d["layers"] if r["module"] in ("b1.1", "b3.1")]
    assert all(r["local_sqnr_db"] > first["local_sqnr_db"] + 5 for r in healthy), d["layers"]
    assert (tmp_path / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert math.isfinite(d["layers"][-1]["accumulated_sqnr_db"])
    fixes = d["fixes"]
    best = fixes["fixes"][0]
    assert best["fix"] == "a16w8" and best["status"] == "ok" and best["module"].startswith("b2")
    planted = next(r for r in d["layers"] if r["point"] == best["point"])
    others = sorted(r["local_sqnr_db"] for r in d["layers"] if r["module"] in ("b1.1", "b3.1"))
    lost = others[0] - planted["local_sqnr_db"]
    assert lost > 5 and best["sqnr_gain_db"] > 0.5 * lost, (lost, best)
    assert best["cycles"] > fixes["base"]["cycles"] and best["cycles_delta"] == best["cycles"] - fixes["base"]["cycles"]
    floated = next(r for r in fixes["fixes"] if r["fix"] == "float")
    assert floated["splits_partition"] is (floated["npu_partitions"] > fixes["base"]["npu_partitions"])
    # the histogram observer clipped there, so a min/max observer is tried too: a real build,
    # another range, so another SQNR (measured, whichever way it goes)
    assert planted["clipped"] > 0
    minmax = next(r for r in fixes["fixes"] if r["fix"] == "minmax")
    assert minmax["status"] == "ok" and "observer: minmax" in minmax["override"] and minmax["sqnr_gain_db"] != 0
    res = run_cli([f"hydra.searchpath=[file://{tmp_path / 'rc'}]", "recipe=planted_fixed", f"store.root={root}"],
                  tmp_path, env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).parent)})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((root / "artifacts" / "planted_fixed" / "v1" / "manifest.json").read_text())
    assert m["metrics"]["accuracy"]["sqnr_db"] == best["sqnr_db"]
    assert m["metrics"]["vela"]["total"]["cycles"] == best["cycles"]


@pytest.mark.slow  # real builds of fixes / DS-CNN: CI runs them
def test_the_table_in_the_build_and_on_another_built_in_model(tmp_path):
    """evaluation.per_layer: the table in the manifest and the report, the plot in the artifact;
    on DS-CNN (a second built-in model), the output point's SQNR is the build's."""
    result = build_in_process(
        ["model=ds_cnn", "evaluation.per_layer=true", "calibration.num_samples=16", "evaluation.num_samples=16",
         "evaluation.tosa_samples=1"],
        tmp_path / "store",
    )  # fmt: skip
    m = result.artifact.manifest()
    table = m["metrics"]["layers"]
    assert table["compared"] >= 5 and table["samples"] == m["metrics"]["accuracy"]["samples"] == 16
    assert table["layers"][-1]["accumulated_sqnr_db"] == m["metrics"]["accuracy"]["sqnr_db"]
    assert (result.artifact.path / "layers.png").read_bytes()[:4] == b"\x89PNG" and "layers.png" in m["files"]
    report = (result.artifact.path / "report.md").read_text()
    assert "## Per layer (16 evaluation samples" in report and "](layers.png)" in report
