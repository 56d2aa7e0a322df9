"""Lowering options (`lowering.io_layout`, `lowering.rewrites`, Vela settings in the target):
each must compute the same outputs as the default lowering, and remove what it claims to."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import build_in_process, compose_config, manifest
from ethosu_build import rewrites, stages, targets
from ethosu_build.validate import validate

NOISE = ["calibration=random", "evaluation=random", "calibration.num_samples=16", "evaluation.num_samples=16", "evaluation.tosa_samples=4"]
POOL_HEAD = ["model.factory._target_=lowering_models.pool_head", "model.name=pool_head", "model.input_shape=[1,3,12,6]"] + NOISE
CONV_FEATURES = ["model.factory._target_=lowering_models.conv_features", "model.name=conv_features", "model.input_shape=[1,3,8,8]"] + NOISE


# --- avg_pool_crop, on the exported graph ---------------------------------------------------------


class Pool(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, **self.kwargs)


@pytest.mark.parametrize("shape, kwargs, reads, stride", [
    ([1, 4, 25, 5], {"kernel_size": (24, 5)}, [24, 5], [1, 1]),                 # ds_cnn's head: one window
    ([1, 2, 8, 9], {"kernel_size": 3, "stride": 2}, [7, 9], [2, 2]),            # several windows, last row unread
    ([2, 3, 10, 10], {"kernel_size": (10, 4), "stride": (5, 3)}, [10, 10], [1, 3]),  # only the stride changes
])
def test_avg_pool_crop_reads_only_what_the_pool_averages_and_keeps_every_output(shape, kwargs, reads, stride):
    x = torch.randn(shape)
    program = torch.export.export(Pool(**kwargs), (x,))
    expected = program.module()(x)
    changes = rewrites.apply(program, ["avg_pool_crop"])
    assert [(c["reads"], c["stride"]["after"]) for c in changes] == [(reads, stride)]
    got = program.module()(x)
    assert got.shape == expected.shape and torch.equal(got, expected)
    # The rewritten graph exports and runs as any other (the quantizer re-traces it).
    assert torch.equal(torch.export.export(program.module(), (x,)).module()(x), expected)


@pytest.mark.parametrize("kwargs", [
    {"kernel_size": 2},                                # windows tile the map
    {"kernel_size": 3, "stride": 2, "padding": 1},     # padded: a different operation, left alone
    {"kernel_size": 3, "stride": 2, "ceil_mode": True},
])
def test_avg_pool_crop_leaves_pools_it_cannot_improve(kwargs):
    program = torch.export.export(Pool(**kwargs), (torch.randn(1, 2, 8, 8),))
    before = [tuple(n.args[1:]) for n in program.graph.nodes if n.op == "call_function"]
    assert rewrites.apply(program, ["avg_pool_crop"]) == []
    assert [tuple(n.args[1:]) for n in program.graph.nodes if n.op == "call_function"] == before


# --- config -------------------------------------------------------------------------------------


def _cfg(overrides):
    return validate(compose_config(overrides)[0])


def test_lowering_options_key_the_stages_they_change():
    base = stages.stage_keys(_cfg([]))
    nhwc = stages.stage_keys(_cfg(["lowering.io_layout=nhwc"]))
    crop = stages.stage_keys(_cfg(["lowering.rewrites=[avg_pool_crop]"]))
    size = stages.stage_keys(_cfg(["target.optimise=Size"]))
    assert nhwc.quantize == base.quantize and nhwc.lower != base.lower  # layout: lowering only
    assert crop.quantize != base.quantize  # rewrites: before the quantizer
    assert size.lower == base.lower and size.vela != base.vela  # Vela settings: Vela only
    cfg = _cfg(["target.optimise=Size", "target.arena_cache_size=65536", "target.vela_flags=[--verbose-cycle-estimate]"])
    assert targets.vela_flags(cfg.target) == ["--optimise=Size", "--arena-cache-size=65536", "--verbose-cycle-estimate"]


# --- real builds --------------------------------------------------------------------------------


def _layout_cycles(artifact) -> int:
    rows = csv.DictReader(open(artifact / "vela" / "per_layer.csv"))
    return sum(int(r["Op Cycles"]) for r in rows if r["NNG Operator"] == "Transpose")


@pytest.mark.slow
def test_fast_lowering_puts_the_pool_on_the_npu_without_transposes_and_keeps_the_outputs(tmp_path):
    from ethosu_build.build import quantized_model
    from ethosu_build.evaluate import boundary_qparams

    default = build_in_process(POOL_HEAD, tmp_path)
    fast = build_in_process(POOL_HEAD + ["lowering=fast"], tmp_path)
    d, f = manifest(default.artifact.path), manifest(fast.artifact.path)
    # Default: the pool on the CPU splits the NPU program; transposes at the NPU graph's edges.
    assert "aten.avg_pool2d.default" in d["delegation"]["cpu_op_counts"] and d["delegation"]["npu_partitions"] == 2
    assert _layout_cycles(default.artifact.path) > 0
    # Fast: one partition, nothing computed on the CPU, no transposes; the input is NHWC.
    assert f["delegation"]["npu_partitions"] == 1 and f["delegation"]["cpu_compute_op_count"] == 0
    assert _layout_cycles(fast.artifact.path) == 0
    assert [r["rewrite"] for r in f["lowering"]["rewrites"]] == ["avg_pool_crop"] and f["lowering"]["io_layout"] == "nhwc"
    assert [x["layout"] for x in f["delegation"]["runtime"]["inputs"]] == ["NHWC"]
    # Same outputs: the deployed program matches its PT2E model, which matches the default's.
    assert f["metrics"]["tosa_check"]["status"] == "done" and f["metrics"]["tosa_check"]["max_lsb_diff"] <= 1
    outputs = []
    for extra in ([], ["lowering=fast"]):
        _, program, _, samples = quantized_model(_cfg(POOL_HEAD + extra + [f"store.root={tmp_path}"]))
        outputs.append(torch.cat([program.module()(samples.x[i : i + 1]) for i in range(len(samples))]))
    step = boundary_qparams(program)[1][0]
    assert (outputs[0] - outputs[1]).abs().max().item() <= step + 1e-9


@pytest.mark.slow
def test_nhwc_outputs_are_checked_in_their_own_layout(tmp_path):
    """A 4-D output follows the input's layout: the TOSA check must read it back as NHWC."""
    m = manifest(build_in_process(CONV_FEATURES + ["lowering.io_layout=nhwc", "target=ethos-u85-256"], tmp_path).artifact.path)
    assert [x["layout"] for x in m["delegation"]["runtime"]["outputs"]] == ["NHWC"]
    assert m["metrics"]["tosa_check"]["status"] == "done" and m["metrics"]["tosa_check"]["max_lsb_diff"] <= 1
    assert m["delegation"]["cpu_compute_op_count"] == 0
