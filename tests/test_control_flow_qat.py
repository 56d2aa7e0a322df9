"""Models with control flow (torch.cond, while_loop) and quantization-aware training: real
builds through ExecuTorch and Vela, and the config errors they can end in."""

from __future__ import annotations

import pytest
from conftest import build_in_process, compose_config, manifest, run_cli
from test_bad_input import assert_nothing_stored

from ethosu_build.errors import ConfigError

GATED_U85 = ["model=digits_gated", "target=ethos-u85-256"]
WHILE_U85 = [
    "model.factory._target_=control_flow_models.halve_until_small",
    "model.name=halve",
    "target=ethos-u85-256",
    "calibration=random",
    "evaluation=random",
    "calibration.num_samples=8",
    "evaluation.num_samples=8",
    "evaluation.tosa_samples=4",
]


def config_error(args: list[str], root) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        build_in_process(args, root)
    assert_nothing_stored(root)
    return info.value


# --- control flow ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cond_model_builds_for_u85_with_the_cond_on_the_npu(tmp_path):
    result = build_in_process(GATED_U85 + ["evaluation.tosa_samples=4"], tmp_path)
    m = manifest(result.artifact.path)
    assert [c["op"] for c in m["delegation"]["control_flow"]["npu"]] == ["cond"]
    assert m["delegation"]["control_flow"]["cpu"] == []
    flow = m["quantization"]["control_flow"]
    [cond] = flow["ops"]
    counts = [flow["samples_per_branch"][b["submodule"]] for b in cond["branches"]]
    # every calibration sample takes exactly one branch, and both branches were calibrated
    assert sum(counts) == m["quantization"]["calibration"]["samples"] == m["config"]["calibration"]["num_samples"]
    assert min(counts) > 0
    # the branch heads' weights are operands of the cond (the ExecuTorch limitation docs/quantization.md names)
    assert any(p.startswith("head_") for p in flow["captured_parameters"])
    assert m["metrics"]["tosa_check"]["status"] == "done"
    report = (result.artifact.path / "report.md").read_text()
    assert "## Control flow" in report and "Control flow on the NPU: cond" in report


def test_cond_model_for_u55_stops_naming_the_op_and_the_target(tmp_path):
    res = run_cli(["model=digits_gated", "target=ethos-u55-128", "store.root=store"], tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    for fragment in ("target.accelerator", "'ethos-u55-128'", "torch.cond", "ethos-u85-256"):
        assert fragment in res.stderr, (fragment, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    assert_nothing_stored(tmp_path / "store")


def test_a_calibration_set_that_misses_a_branch_stops_naming_the_branch(tmp_path):
    # one sample can only take one of the two branches
    err = config_error(GATED_U85 + ["calibration.num_samples=1"], tmp_path)
    [issue] = err.issues
    assert issue.key == "calibration"
    assert "branch of torch.cond" in issue.message and "_graph_0" in issue.message
    assert "none of the 1 calibration samples" in issue.message


@pytest.mark.slow
def test_while_loop_builds_for_u85_and_an_unreached_body_is_named(tmp_path):
    result = build_in_process(WHILE_U85, tmp_path / "ok")
    m = manifest(result.artifact.path)
    assert [c["op"] for c in m["delegation"]["control_flow"]["npu"]] == ["while_loop"]
    assert all(n > 0 for n in m["quantization"]["control_flow"]["samples_per_branch"].values())
    # with a limit no activation sum reaches, no calibration sample runs the loop body
    err = config_error(WHILE_U85 + ["+model.factory.limit=1e9"], tmp_path / "missed")
    assert "body_fn of torch.while_loop" in str(err)


# --- quantization-aware training --------------------------------------------------------------


@pytest.mark.slow
def test_qat_is_at_least_as_accurate_as_ptq_and_a8w4_has_smaller_weights(tmp_path):
    """On the held-out digits split (the default evaluation set, 360 samples)."""
    common = ["evaluation.tosa_samples=4"]
    ptq = manifest(build_in_process(common, tmp_path).artifact.path)
    qat = manifest(build_in_process(common + ["quantization=int8_qat"], tmp_path).artifact.path)
    # distill: trained against the float model's outputs instead of the labels
    a8w4 = manifest(
        build_in_process(common + ["quantization=a8w4_qat", "quantization.qat.loss=distill"], tmp_path).artifact.path
    )
    assert ptq["metrics"]["accuracy"]["samples"] == qat["metrics"]["accuracy"]["samples"] == 360
    assert qat["metrics"]["accuracy"]["quantized_top1"] >= ptq["metrics"]["accuracy"]["quantized_top1"]
    assert a8w4["metrics"]["accuracy"]["quantized_top1"] is not None
    # 4-bit weights: smaller once Vela has encoded them, and the applied schemes say so
    weights = lambda m: m["metrics"]["vela"]["total"]["encoded_weights_bytes"]  # noqa: E731
    assert weights(a8w4) < weights(qat)
    assert "a8w4" in a8w4["quantization"]["applied"]["ops_by_scheme"]
    assert "a8w4" not in qat["quantization"]["applied"]["ops_by_scheme"]
    assert qat["quantization"]["qat"]["loss"] == "cross_entropy"  # auto, and the digits have labels
    assert a8w4["quantization"]["qat"]["loss"] == "distill"
    for m in (qat, a8w4):
        training = m["quantization"]["qat"]
        assert training["samples"] == 1437 and training["epochs"] == m["config"]["quantization"]["qat"]["epochs"]
        assert m["delegation"]["npu_partitions"] == ptq["delegation"]["npu_partitions"]
        assert m["delegation"]["cpu_compute_op_count"] == 0  # BatchNorm folded: every conv on the NPU
        assert m["fingerprints"]["qat_data"] is not None
    assert ptq["quantization"]["qat"] is None


def test_qat_settings_key_the_quantize_stage_and_calibration_does_not():
    from ethosu_build.config.validate import validate
    from ethosu_build.pipeline.keys import stage_keys

    def keys(args):
        return stage_keys(validate(compose_config(args)[0]))

    base = keys(["quantization=int8_qat"])
    assert keys(["quantization=int8_qat", "quantization.qat.lr=0.001"]).quantize != base.quantize
    assert keys(["quantization=int8_qat", "quantization.qat.epochs=1"]).quantize != base.quantize
    assert (
        keys(
            ["quantization=int8_qat", "quantization.qat.dataset={_target_: ethosu_build.data.digits, split: all}"]
        ).quantize
        != base.quantize
    )
    # QAT learns its ranges from training: the calibration set does not enter its key
    assert keys(["quantization=int8_qat", "calibration.num_samples=64"]).quantize == base.quantize
    assert keys(["quantization=int8"]).quantize != base.quantize
