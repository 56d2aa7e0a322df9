"""Batched calibration (one observer call per batch, on the batch-dynamic export) against
sample-by-sample calibration (what ExecuTorch's CLI does): same samples, fewer calls, and
the two quantized models agree more closely than either agrees with the float model."""

from __future__ import annotations

import pytest
import torch
from conftest import build_in_process, compose_config

from ethosu_build import data
from ethosu_build.config.validate import validate
from ethosu_build.pipeline.build import quantized_model
from ethosu_build.pipeline.evaluate import error_metrics


def _quantized(root, overrides):
    result = build_in_process(overrides, root)
    cfg = validate(compose_config([*overrides, f"store.root={root}"])[0])
    return result.artifact.manifest(), quantized_model(cfg)[1].module(), cfg


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_batched_calibration_matches_sample_by_sample(shared_root):
    common = ["calibration.num_samples=64", "evaluation.tosa_check=false"]
    batched, q_batched, cfg = _quantized(shared_root, [*common, "calibration.batch_size=32"])
    single, q_single, _ = _quantized(shared_root, [*common, "calibration.batch_size=1"])

    cal_b, cal_s = batched["quantization"]["calibration"], single["quantization"]["calibration"]
    assert cal_b["batched"] and cal_b["samples"] == cal_s["samples"] == 64
    assert cal_b["calls"] == 2 and cal_s["calls"] == 64

    ev = data.take(data.instantiate(cfg.evaluation.dataset), cfg.evaluation.num_samples, cfg.model.input_specs())
    with torch.no_grad():
        out_b = torch.cat([q_batched(*ev.select(slice(i, i + 1))) for i in range(len(ev))])
        out_s = torch.cat([q_single(*ev.select(slice(i, i + 1))) for i in range(len(ev))])
    between = error_metrics(out_s, out_b)["sqnr_db"]
    # calibrating in batches moves the outputs less than quantization itself does
    assert between > batched["metrics"]["accuracy"]["sqnr_db"]
    assert between > single["metrics"]["accuracy"]["sqnr_db"]
