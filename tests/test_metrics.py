"""What a build measures: Vela figures from its CSVs, accuracy and error metrics, the TOSA
reference check, budget gates. Relations are asserted, never hard-coded numbers."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from conftest import build_in_process, run_cli

from ethosu_build.errors import BudgetBreached
from ethosu_build.fingerprint import file_sha256


def test_digits_int8_is_accurate_and_matches_the_tosa_reference(shared_root):
    m = build_in_process(["evaluation.tosa_samples=32"], shared_root).artifact.manifest()
    acc, tosa = m["metrics"]["accuracy"], m["metrics"]["tosa_check"]
    assert acc["samples"] == 360 and acc["float_top1"] > 90
    assert acc["accuracy_drop"] <= 1.0
    assert acc["accuracy_drop"] == pytest.approx(acc["float_top1"] - acc["quantized_top1"])
    assert acc["sqnr_db"] > 20 and acc["cosine"] > 0.99
    assert tosa["status"] == "done" and tosa["samples"] == 32
    assert tosa["max_lsb_diff"] <= 1 and tosa["top1_agreement"] == 100.0


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_a16w8_has_higher_sqnr_and_more_cycles_than_int8(shared_root):
    int8 = build_in_process(["quantization=int8"], shared_root).artifact.manifest()
    a16w8 = build_in_process(["quantization=a16w8"], shared_root).artifact.manifest()
    assert a16w8["metrics"]["accuracy"]["sqnr_db"] > int8["metrics"]["accuracy"]["sqnr_db"]
    assert a16w8["metrics"]["vela"]["total"]["cycles"] > int8["metrics"]["vela"]["total"]["cycles"]


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
@pytest.mark.parametrize("target", ["ethos-u55-128", "ethos-u65-256", "ethos-u85-256"])
def test_our_pte_is_the_bytes_of_a_plain_executorch_build(shared_root, target):
    """The same quantized program lowered by plain ExecuTorch calls for the target gives our
    model.pte: capturing Vela's reports changes nothing, and neither does filling a lowering
    shared by several targets with each target's Vela output (u65 reuses u55's lowering)."""
    from conftest import compose_config
    from executorch.backends.arm.ethosu import EthosUPartitioner
    from executorch.backends.cortex_m.passes.replace_quant_nodes_pass import ReplaceQuantNodesPass
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower

    from ethosu_build.config.targets import compile_spec
    from ethosu_build.config.validate import validate
    from ethosu_build.pipeline.build import quantized_model

    build_in_process(["target=ethos-u55-128"], shared_root)
    r = build_in_process([f"target={target}"], shared_root)
    if target == "ethos-u65-256":  # same TOSA specification as u55: only Vela ran
        assert r.artifact.manifest()["stages"]["lower"]["status"] == "cached"
        assert r.artifact.manifest()["stages"]["vela"]["status"] == "ran"
    cfg = validate(compose_config([f"target={target}", f"store.root={shared_root}"])[0])
    program = quantized_model(cfg)[1]  # the quantize stage, from the cache the builds filled
    edge = to_edge_transform_and_lower(
        program,
        partitioner=[EthosUPartitioner(compile_spec(cfg.target))],
        compile_config=EdgeCompileConfig(_check_ir_validity=False),
    ).transform([ReplaceQuantNodesPass()])
    plain = edge.to_executorch(config=ExecutorchBackendConfig(extract_delegate_segments=False)).buffer
    assert (r.artifact.path / "model.pte").read_bytes() == plain


def _bad_calibration(tmp_path):
    """Calibration samples at 1% of the real range: activations saturate, accuracy drops."""
    from ethosu_build.data import digits

    x = digits("train").x[:64].numpy() * 0.01
    np.savez(tmp_path / "dim.npz", inputs=x)
    return ["calibration=tensors", f"calibration.dataset.path={tmp_path / 'dim.npz'}", "calibration.num_samples=64"]


BUDGETS = ["max_cpu_ops", "max_sram_kib", "max_flash_kib", "max_planned_kib", "max_accuracy_drop", "max_inference_ms"]


def _measured(m, budget):
    from ethosu_build.pipeline.budgets import measured

    return measured(m["delegation"], m["metrics"]["vela"], m["metrics"]["accuracy"], m["memory"])[budget][0]


@pytest.mark.parametrize("budget", BUDGETS)
def test_budget_passes_at_its_measured_value_and_breaks_below_it(budget, shared_root, tmp_path):
    # a configuration where the measured value is above zero, so a lower limit exists
    base = {"max_cpu_ops": ["overrides=head_float"], "max_accuracy_drop": _bad_calibration(tmp_path)}.get(budget, [])
    m = build_in_process(base, shared_root).artifact.manifest()
    value = _measured(m, budget)
    assert value > 0
    ok = build_in_process([*base, f"budget.{budget}={value}"], shared_root).artifact.manifest()
    assert ok["budget"][budget] == {
        "limit": value,
        "measured": value,
        "unit": ok["budget"][budget]["unit"],
        "passed": True,
    }
    before = sorted(p.name for p in (shared_root / "artifacts" / "digits_cnn").iterdir())
    with pytest.raises(BudgetBreached) as breach:
        build_in_process([*base, f"budget.{budget}={value / 2 if budget != 'max_cpu_ops' else 0}"], shared_root)
    assert [b["budget"] for b in breach.value.breaches] == [budget]
    assert breach.value.breaches[0]["measured"] == value
    if budget in ("max_sram_kib", "max_flash_kib"):  # the message says which figure it judged
        region = budget.split("_")[1]
        assert f"judged: the memory bill's {region.upper()} in {m['memory']['memory_mode']}" in str(breach.value)
        # one name, one meaning: the objective and a sweep's summary read the same figure
        from ethosu_build.config.objective import METRICS
        from ethosu_build.sweep.summary import _measured_columns

        assert METRICS[f"{region}_kib"].read(m) == value == _measured_columns(m)[f"{region}_kib"]
    assert sorted(p.name for p in (shared_root / "artifacts" / "digits_cnn").iterdir()) == before


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_budget_breach_exits_3_naming_value_and_limit(tmp_path):
    res = run_cli(["budget.max_inference_ms=0.000001", "budget.max_sram_kib=100000"], tmp_path)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "budget.max_inference_ms: measured" in res.stderr and "limit 1e-06 ms" in res.stderr
    assert "budget.max_sram_kib:" not in res.stderr  # it passed
    assert not list((tmp_path / "outputs" / "artifacts").rglob("v*"))


def test_accuracy_budget_needs_labels(tmp_path):
    res = run_cli(
        [
            "model=deep_autoencoder",
            "budget.max_accuracy_drop=1",
            "calibration.num_samples=8",
            "evaluation.num_samples=8",
        ],
        tmp_path,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert "budget.max_accuracy_drop" in res.stderr and "no labels" in res.stderr


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_tosa_check_runs_when_only_evaluation_changed(shared_root):
    """The lowering is cached, the check still needs the partitioned program: it lowers again
    in memory, and the stored artifact is unchanged."""
    first = build_in_process(["evaluation.tosa_samples=4"], shared_root).artifact.manifest()
    second = build_in_process(["evaluation.tosa_samples=5"], shared_root)
    m = second.artifact.manifest()
    assert m["stages"]["lower"]["status"] == "cached"
    assert m["metrics"]["tosa_check"]["status"] == "done" and m["metrics"]["tosa_check"]["samples"] == 5
    assert m["files"]["model.pte"]["sha256"] == first["files"]["model.pte"]["sha256"]
    off = build_in_process(["evaluation.tosa_check=false"], shared_root).artifact.manifest()
    assert off["metrics"]["tosa_check"]["status"] == "off"


def test_error_metrics_relations():
    import torch

    from ethosu_build.pipeline.evaluate import error_metrics

    ref = torch.randn(100)
    assert error_metrics(ref, ref)["sqnr_db"] == math.inf
    small, large = error_metrics(ref, ref + 0.01), error_metrics(ref, ref + 0.1)
    assert small["sqnr_db"] > large["sqnr_db"] and small["cosine"] > large["cosine"]
    assert large["max_abs_error"] == pytest.approx(0.1, rel=1e-5)


def test_report_and_show_describe_the_artifact(shared_root):
    r = build_in_process(["overrides=head_float"], shared_root)
    m = r.artifact.manifest()
    report = (r.artifact.path / "report.md").read_text()
    assert m["files"]["report.md"]["sha256"] == file_sha256(r.artifact.path / "report.md")
    assert f"# {r.artifact.id}" in report
    for text in (
        "ethos-u55-128",
        "head_float",
        "## Performance",
        str(m["metrics"]["vela"]["total"]["cycles"]),
        "## Top layers by cycles",
        "## Where the NPU cycles go",
        "aten.addmm.default",
        m["delegation"]["cpu_ops"][0]["op"],
        "## Runtime contract",
    ):
        assert text in report, text
    reasons = [o["reason"] for o in m["delegation"]["cpu_ops"] if o["module"] == "head"]
    assert any(reasons)  # the partitioner said why the float head stays on the CPU
    assert m["metrics"]["tosa_check"]["status"] == "done"  # CPU ops run in PyTorch around the NPU part
    shown = run_cli(
        ["--root", str(shared_root), "show", r.artifact.id],
        shared_root,
        tool="ethosu-artifacts",
        env={"COLUMNS": "200"},
    )
    assert shown.returncode == 0 and "Top layers by cycles" in shown.stdout and "head_float" in shown.stdout


def test_cycles_by_operator_groups_the_per_layer_csv(tmp_path):
    from ethosu_build.pipeline import vela_files as vela

    rows = [("Conv2D", 60), ("Transpose", 10), ("Conv2D", 20), ("Reshape", 5), ("AvgPool", 5)]
    with open(tmp_path / vela.PER_LAYER_CSV, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["partition", "Original Operator", "Op Cycles"])
        w.writerows([[i % 2, op, c] for i, (op, c) in enumerate(rows)])
    by_op = vela.cycles_by_operator(tmp_path)
    assert [x["op"] for x in by_op] == ["Conv2D", "Transpose", "Reshape", "AvgPool"]  # most cycles first; ties as met
    conv = by_op[0]
    assert conv["layers"] == 2 and conv["cycles"] == 80 and conv["kind"] == "compute"
    assert math.isclose(sum(x["pct"] for x in by_op), 100.0, abs_tol=0.05)
    assert {x["op"]: x["kind"] for x in by_op}["Reshape"] == "layout"
