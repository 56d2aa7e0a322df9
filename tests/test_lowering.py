"""Lowering options (`lowering.io_layout`, `lowering.rewrites`, Vela settings in the target):
each must compute the same outputs as the default lowering, and remove what it claims to."""

from __future__ import annotations

import pytest
import torch
from conftest import build_in_process, compose_config, csv_rows, manifest

from ethosu_build.config import targets
from ethosu_build.config.schema import InputSpec
from ethosu_build.config.validate import validate
from ethosu_build.pipeline import rewrites
from ethosu_build.pipeline.export import export_program
from ethosu_build.pipeline.keys import stage_keys

NOISE = [
    "calibration=random",
    "evaluation=random",
    "calibration.num_samples=16",
    "evaluation.num_samples=16",
    "evaluation.tosa_samples=4",
]
POOL_HEAD = [
    "model.factory._target_=lowering_models.pool_head",
    "model.name=pool_head",
    "model.input_shape=[1,3,12,6]",
] + NOISE
STRIDED = [
    "model.factory._target_=lowering_models.strided_first_conv",
    "model.name=strided",
    "model.input_shape=[1,1,20,10]",
] + NOISE
CONV_FEATURES = [
    "model.factory._target_=lowering_models.conv_features",
    "model.name=conv_features",
    "model.input_shape=[1,3,8,8]",
] + NOISE


# --- avg_pool_crop, on the exported graph ---------------------------------------------------------


class Pool(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, **self.kwargs)


@pytest.mark.parametrize(
    "shape, kwargs, reads, stride",
    [
        ([1, 4, 25, 5], {"kernel_size": (24, 5)}, [24, 5], [1, 1]),  # ds_cnn's head: one window
        ([1, 2, 8, 9], {"kernel_size": 3, "stride": 2}, [7, 9], [2, 2]),  # several windows, last row unread
        ([2, 3, 10, 10], {"kernel_size": (10, 4), "stride": (5, 3)}, [10, 10], [1, 3]),  # only the stride changes
    ],
)
def test_avg_pool_crop_reads_only_what_the_pool_averages_and_keeps_every_output(shape, kwargs, reads, stride):
    x = torch.randn(shape)
    program = torch.export.export(Pool(**kwargs), (x,))
    expected = program.module()(x)
    program, changes = rewrites.apply(program, ["avg_pool_crop"], lambda m: torch.export.export(m, (x,)))
    assert [(c["reads"], c["stride"]["after"]) for c in changes] == [(reads, stride)]
    got = program.module()(x)
    assert got.shape == expected.shape and torch.equal(got, expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kernel_size": 2},  # windows tile the map
        {"kernel_size": 3, "stride": 2, "padding": 1},  # padded: a different operation, left alone
        {"kernel_size": 3, "stride": 2, "ceil_mode": True},
    ],
)
def test_avg_pool_crop_leaves_pools_it_cannot_improve(kwargs):
    program = torch.export.export(Pool(**kwargs), (torch.randn(1, 2, 8, 8),))
    assert rewrites.apply(program, ["avg_pool_crop"], lambda m: torch.export.export(m, (torch.randn(1, 2, 8, 8),))) == (
        program,
        [],
    )


# --- conv_space_to_depth, on the exported graph ---------------------------------------------------


def _space_to_depth(model, shape):
    specs = [InputSpec("input", list(shape))]
    program = export_program(model.eval(), specs)
    return rewrites.apply(program, ["conv_space_to_depth"], lambda m: export_program(m, specs))


@pytest.mark.parametrize(
    "shape, conv",
    [
        ([1, 1, 49, 10], dict(out_channels=16, kernel_size=(10, 4), stride=2, padding=(5, 1))),  # ds_cnn's first layer
        ([1, 1, 50, 11], dict(out_channels=8, kernel_size=3, stride=2, padding=1)),  # odd kernel: zero taps
        ([1, 1, 17, 13], dict(out_channels=8, kernel_size=(5, 3), stride=3, padding=(2, 0))),  # last column never read
        ([1, 1, 9, 9], dict(out_channels=8, kernel_size=3, stride=2, padding=3)),  # padding wider than the stride
    ],
)
def test_conv_space_to_depth_computes_the_same_convolution_over_more_channels(shape, conv):
    model = torch.nn.Conv2d(1, **conv, bias=True)
    x = torch.randn([3] + shape[1:])
    program, changes = _space_to_depth(model, shape)
    stride = conv["stride"]
    assert [c["after"]["channels"] for c in changes] == [stride * stride]
    convs = [n for n in program.graph.nodes if n.target == torch.ops.aten.conv2d.default]
    assert [n.args[1].meta["val"].shape[1] for n in convs] == [stride * stride]  # over s*s channels
    assert "weight" not in program.state_dict  # the original weight is gone, not carried unused
    assert [list(n.args[3]) if len(n.args) > 3 else [1, 1] for n in convs] == [[1, 1]]  # at stride 1
    with torch.no_grad():
        assert torch.allclose(program.module()(x[:1]), model(x[:1]), atol=1e-5)


@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),  # the input already fills more of the MAC array
        torch.nn.Conv2d(1, 8, 3, stride=1, padding=1),  # not strided
        torch.nn.Conv2d(1, 8, 3, stride=(2, 1), padding=1),  # unequal strides
        torch.nn.Conv2d(1, 8, 3, stride=2, dilation=2),
    ],
)
def test_conv_space_to_depth_leaves_other_convolutions(conv):
    shape = [1, conv.in_channels, 16, 16]
    program, changes = _space_to_depth(conv, shape)
    assert changes == []


# --- config -------------------------------------------------------------------------------------


def _cfg(overrides):
    return validate(compose_config(overrides)[0])


def test_lowering_options_key_the_stages_they_change():
    base = stage_keys(_cfg([]))
    nhwc = stage_keys(_cfg(["lowering.io_layout=nhwc"]))
    crop = stage_keys(_cfg(["lowering.rewrites=[avg_pool_crop]"]))
    size = stage_keys(_cfg(["target.optimise=Size"]))
    assert nhwc.quantize == base.quantize and nhwc.lower != base.lower  # layout: lowering only
    assert crop.quantize != base.quantize  # rewrites: before the quantizer
    assert size.lower == base.lower and size.vela != base.vela  # Vela settings: Vela only
    cfg = _cfg(
        ["target.optimise=Size", "target.arena_cache_size=65536", "target.vela_flags=[--verbose-cycle-estimate]"]
    )
    assert targets.vela_flags(cfg.target) == ["--optimise=Size", "--arena-cache-size=65536", "--verbose-cycle-estimate"]


# --- real builds --------------------------------------------------------------------------------


def _layout_cycles(artifact) -> int:
    rows = csv_rows(artifact / "vela" / "per_layer.csv")
    return sum(int(r["Op Cycles"]) for r in rows if r["NNG Operator"] == "Transpose")


@pytest.mark.slow
def test_fast_lowering_puts_the_pool_on_the_npu_without_transposes_and_keeps_the_outputs(tmp_path):
    from ethosu_build.pipeline.build import quantized_model
    from ethosu_build.pipeline.quantize import boundary_qparams

    default = build_in_process(POOL_HEAD, tmp_path)
    fast = build_in_process(POOL_HEAD + ["lowering=fast"], tmp_path)
    d, f = manifest(default.artifact.path), manifest(fast.artifact.path)
    # Default: the pool on the CPU splits the NPU program; transposes at the NPU graph's edges.
    assert "aten.avg_pool2d.default" in d["delegation"]["cpu_op_counts"] and d["delegation"]["npu_partitions"] == 2
    assert _layout_cycles(default.artifact.path) > 0
    # Fast: one partition, nothing computed on the CPU, no transposes; the input is NHWC.
    assert f["delegation"]["npu_partitions"] == 1 and f["delegation"]["cpu_compute_op_count"] == 0
    assert _layout_cycles(fast.artifact.path) == 0
    assert [r["rewrite"] for r in f["lowering"]["rewrites"]] == ["avg_pool_crop"] and f["lowering"][
        "io_layout"
    ] == "nhwc"
    assert [x["layout"] for x in f["delegation"]["runtime"]["inputs"]] == ["NHWC"]
    # Same outputs: the deployed program matches its PT2E model, which matches the default's.
    assert f["metrics"]["tosa_check"]["status"] == "done" and f["metrics"]["tosa_check"]["max_lsb_diff"] <= 1
    outputs = []
    for extra in ([], ["lowering=fast"]):
        _, program, _, samples = quantized_model(_cfg(POOL_HEAD + extra + [f"store.root={tmp_path}"]))
        outputs.append(torch.cat([program.module()(*samples.select(slice(i, i + 1))) for i in range(len(samples))]))
    step = boundary_qparams(program)[1][0]
    assert (outputs[0] - outputs[1]).abs().max().item() <= step + 1e-9


@pytest.mark.slow
def test_nhwc_outputs_are_checked_in_their_own_layout(tmp_path):
    """A 4-D output follows the input's layout: the TOSA check must read it back as NHWC."""
    m = manifest(
        build_in_process(CONV_FEATURES + ["lowering.io_layout=nhwc", "target=ethos-u85-256"], tmp_path).artifact.path
    )
    assert [x["layout"] for x in m["delegation"]["runtime"]["outputs"]] == ["NHWC"]
    assert m["metrics"]["tosa_check"]["status"] == "done" and m["metrics"]["tosa_check"]["max_lsb_diff"] <= 1
    assert m["delegation"]["cpu_compute_op_count"] == 0


@pytest.mark.slow
def test_space_to_depth_builds_with_the_same_outputs(tmp_path):
    from ethosu_build.pipeline.build import quantized_model
    from ethosu_build.pipeline.quantize import boundary_qparams

    rewritten = STRIDED + ["lowering.rewrites=[conv_space_to_depth]"]
    m = manifest(build_in_process(rewritten, tmp_path).artifact.path)
    assert [r["rewrite"] for r in m["lowering"]["rewrites"]] == ["conv_space_to_depth"]
    assert m["delegation"]["npu_partitions"] == 1 and m["delegation"]["cpu_compute_op_count"] == 0
    assert m["metrics"]["tosa_check"]["status"] == "done" and m["metrics"]["tosa_check"]["max_lsb_diff"] <= 1
    outputs, steps = [], []
    for args in (STRIDED, rewritten):
        _, program, _, samples = quantized_model(_cfg(args + [f"store.root={tmp_path}"]))
        outputs.append(torch.cat([program.module()(*samples.select(slice(i, i + 1))) for i in range(len(samples))]))
        steps.append(boundary_qparams(program)[1][0])
    # The BatchNorm still folds into the rewritten convolution.
    assert not [n for n in program.graph.nodes if "batch_norm" in str(n.target)]
    assert [n for n in program.graph.nodes if n.target == torch.ops.aten.pixel_unshuffle.default]
    # Float rounding moves the calibrated ranges in their last bits: at most one output step.
    assert (outputs[0] - outputs[1]).abs().max().item() <= max(steps) * 1.001
