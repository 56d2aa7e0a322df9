"""A model of several outputs, end to end: a detector's two heads (class logits and box
offsets, tests/zoo_models.py) get every output in the evaluation, the TOSA check, the runtime
contract, report.md and the firmware bundle; and the evaluation runs sample by sample, quietly,
when the batch-dynamic program fails."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import FEW_EVALUATED, build_in_process, run_cli
from test_firmware import check_bundle, check_headers

from ethosu_build.data.sampling import Samples
from ethosu_build.pipeline.evaluate import compare
from ethosu_build.pipeline.outputs import flat_outputs

DETECTOR = [
    "model.factory._target_=zoo_models.detector",
    "model.name=detector",
    "target=ethos-u85-256",
    "calibration.num_samples=8",
    *FEW_EVALUATED,
]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs") / "store"
    return build_in_process(DETECTOR, root).artifact


def test_each_output_is_evaluated_and_the_build_reads_the_worst(built):
    acc = built.manifest()["metrics"]["accuracy"]
    scores, boxes = acc["outputs"]
    assert (scores["name"], boxes["name"]) == ("output_0", "output_1")
    # top-1 on the first output only: the digits labels rank the class logits, not the boxes
    assert scores["float_top1"] is not None and scores["quantized_top1"] is not None
    assert boxes["float_top1"] is boxes["quantized_top1"] is boxes["accuracy_drop"] is None
    for key in ("float_top1", "quantized_top1", "accuracy_drop"):
        assert acc[key] == scores[key]
    assert acc["sqnr_db"] == min(scores["sqnr_db"], boxes["sqnr_db"])
    assert acc["cosine"] == min(scores["cosine"], boxes["cosine"])
    assert acc["max_abs_error"] == max(scores["max_abs_error"], boxes["max_abs_error"])
    assert all(o["sqnr_db"] > 10 and o["cosine"] > 0.9 for o in (scores, boxes)), acc


def test_the_tosa_check_compares_every_output_in_its_own_scale(built):
    m = built.manifest()
    tosa = m["metrics"]["tosa_check"]
    assert tosa["status"] == "done" and tosa["samples"] == 4
    each = tosa["outputs"]
    assert [o["name"] for o in each] == ["output_0", "output_1"]
    assert tosa["max_lsb_diff"] == max(o["max_lsb_diff"] for o in each) <= 2
    assert tosa["max_abs_diff"] == max(o["max_abs_diff"] for o in each)
    with np.load(io.BytesIO((built.path / "check" / "tosa_io.npz").read_bytes())) as z:
        assert {k: z[k].shape for k in z.files} == {"input_0": (4, 1, 8, 8), "output_0": (4, 10), "output_1": (4, 4)}


def test_the_runtime_contract_lists_both_outputs_with_their_quantization(built):
    runtime = built.manifest()["delegation"]["runtime"]
    assert [o["shape"] for o in runtime["outputs"]] == [[1, 10], [1, 4]]
    scales = [o["quantization"]["scale"] for o in runtime["outputs"]]
    assert all(o["quantization"]["dtype"] == "int8" for o in runtime["outputs"])
    assert scales[0] != scales[1]  # logits and sigmoid box offsets: each output its own range


def test_the_report_has_a_row_per_output(built):
    report = (built.path / "report.md").read_text()
    accuracy = report.split("## Accuracy")[1].split("\n## ")[0]
    assert "| output | float top-1 % |" in accuracy
    rows = [line for line in accuracy.splitlines() if line.startswith("| output_")]
    assert [r.split(" | ")[0] for r in rows] == ["| output_0", "| output_1"]
    assert "worst output's" in accuracy
    tosa = report.split("## TOSA reference check")[1].split("\n## ")[0]
    assert [line.split(" | ")[0] for line in tosa.splitlines() if line.startswith("| output_")] == [
        "| output_0",
        "| output_1",
    ]
    runtime = report.split("## Runtime contract")[1].split("\n## ")[0]
    assert len([line for line in runtime.splitlines() if line.startswith("| output |")]) == 2


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_the_firmware_bundle_declares_and_checks_both_outputs(built, tmp_path):
    dest = tmp_path / "bundle"
    res = run_cli(["--root", str(built.path.parents[2]), "export", built.id, str(dest), "--firmware"], tmp_path,
                  tool="ethosu-artifacts")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    header = (dest / "model_io.h").read_text()
    assert "#define MODEL_OUTPUT_COUNT 2" in header
    assert '#define MODEL_OUTPUT_1_NAME "output_1"' in header and "#define MODEL_OUTPUT_1_SHAPE {1, 4}" in header
    (tmp_path / "cc").mkdir()
    entries = check_headers(built.manifest(), dest, built.path / "model.pte", tmp_path / "cc")
    assert [e[0] for e in entries] == ["input", "output_0", "output_1"] and all(len(e) == 5 for e in entries)
    assert check_bundle(built, dest) == 2


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_a_dict_of_outputs_is_named_by_its_keys(tmp_path):
    """The same detector returning {"scores": ..., "boxes": ...}: torch.export flattens it in
    the dict's order, and the keys name the outputs in the manifest, the report and model_io.h."""
    from ethosu_build.pipeline import firmware

    overrides = [o.replace("zoo_models.detector", "zoo_models.detector_dict") for o in DETECTOR]
    a = build_in_process(overrides, tmp_path).artifact
    m = a.manifest()
    assert [o["name"] for o in m["metrics"]["accuracy"]["outputs"]] == ["scores", "boxes"]
    assert [o["name"] for o in m["metrics"]["tosa_check"]["outputs"]] == ["scores", "boxes"]
    assert m["metrics"]["accuracy"]["outputs"][0]["quantized_top1"] is not None
    assert [o["shape"] for o in m["delegation"]["runtime"]["outputs"]] == [[1, 10], [1, 4]]
    header = firmware.model_io_h(m, firmware.io_names(m))
    assert '#define MODEL_OUTPUT_0_NAME "scores"' in header and '#define MODEL_OUTPUT_1_NAME "boxes"' in header
    assert "| boxes |" in (a.path / "report.md").read_text()


# --- the evaluation on its own: no build -----------------------------------------------------


def test_outputs_are_named_as_torch_export_flattens_them():
    t = torch.zeros(1)
    assert flat_outputs(t) == (["output"], [t])
    assert flat_outputs((t, t))[0] == ["output_0", "output_1"]
    assert flat_outputs({"scores": t, "boxes": t})[0] == ["scores", "boxes"]
    assert flat_outputs((t, {"a": t, "b": 3}))[0] == ["output_0", "output_1.a"]  # a constant is no output


class _BatchOne(torch.nn.Module):
    def forward(self, x):
        return x.reshape(1, 16) * 2  # written for batch 1 only


class _Doubled(torch.nn.Module):
    def forward(self, x):
        return (x * 2).flatten(1)


def test_a_failing_batched_program_falls_back_to_one_sample_at_a_time_quietly(caplog, capfd):
    """torch.fx prints a failing GraphModule's generated code to stderr: the build log's."""
    samples = Samples((torch.randn(6, 1, 4, 4),), torch.tensor([0, 1, 2, 3, 4, 5]))
    batched = SimpleNamespace(module=lambda: torch.fx.symbolic_trace(_BatchOne()))
    single = SimpleNamespace(module=lambda: torch.fx.symbolic_trace(_Doubled()))
    with caplog.at_level(logging.DEBUG, logger="ethosu_build.build"):
        acc = compare(_Doubled(), single, samples, batched, batch=4)
    assert acc["sqnr_db"] == float("inf") and acc["float_top1"] == acc["quantized_top1"]
    assert "outputs" not in acc  # one output: the figures of old
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(info) == 1 and "one sample at a time" in info[0] and "RuntimeError" in info[0], info
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "generated forward" in debug  # what torch.fx printed, kept for the build log
    assert "generated forward" not in capfd.readouterr().err


def test_one_output_keeps_the_figures_of_old_and_several_get_a_row_each():
    samples = Samples((torch.randn(5, 3),), None)
    program = SimpleNamespace(module=lambda: torch.nn.Identity())
    one = compare(torch.nn.Identity(), program, samples)
    assert list(one) == ["samples", "sqnr_db", "cosine", "max_abs_error", "float_top1", "quantized_top1",
                         "accuracy_drop"]  # fmt: skip

    class Two(torch.nn.Module):
        def __init__(self, noise: float):
            super().__init__()
            self.noise = noise

        def forward(self, x):
            return {"scores": x, "boxes": x[:, :2] + self.noise}

    several = compare(Two(0.0), SimpleNamespace(module=lambda: Two(0.01)), samples)
    assert [o["name"] for o in several["outputs"]] == ["scores", "boxes"]
    assert several["outputs"][0]["sqnr_db"] == float("inf") > several["outputs"][1]["sqnr_db"] == several["sqnr_db"]
