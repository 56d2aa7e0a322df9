"""`ethosu-artifacts diff` says why two programs differ: identical bytes, an equivalent
program (a one-ulp scale change: named, within tolerance, outputs within 1 LSB), or a
different one, with the first cause."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import build_in_process, run_cli

QUICK = ["calibration.num_samples=64", "evaluation.num_samples=64", "evaluation.tosa_samples=8"]


def diff(root, a, b, *extra):
    res = run_cli(["--root", str(root), "diff", a, b, *extra], root.parent, tool="ethosu-artifacts")
    assert "Traceback" not in res.stderr, res.stderr
    return res


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff") / "store"
    build_in_process(QUICK, root)
    return root


def test_two_identical_builds_are_identical(store):
    build_in_process([*QUICK, "name=twin"], store)  # every stage from the cache: the same bytes
    res = diff(store, "digits_cnn/v1", "twin/v1", "--json")
    assert res.returncode == 0
    assert json.loads(res.stdout)["verdict"] == "identical"


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_int8_and_a16w8_are_different_and_the_cause_is_their_quantization(store):
    build_in_process([*QUICK, "name=wide", "quantization=a16w8"], store)
    res = diff(store, "digits_cnn/v1", "wide/v1", "--json")
    assert res.returncode == 1
    result = json.loads(res.stdout)
    assert result["verdict"] == "different"
    assert result["cause"].startswith("io: input 0 quantized as int8") and "int16" in result["cause"]
    text = diff(store, "digits_cnn/v1", "wide/v1").stdout
    assert text.splitlines()[0].startswith(
        "digits_cnn/v1 vs wide/v1: different (first cause: io: input 0 quantized as int8"
    )


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_a_one_ulp_change_of_one_scale_is_equivalent_and_named(store, tmp_path, monkeypatch):
    """The first activation observer's scale is moved by one float32 ulp, as another machine's
    kernels could: the program differs in bytes, and the diff says by how much and where."""
    import torch
    from torchao.quantization.pt2e.observer import HistogramObserver

    original = HistogramObserver.calculate_qparams
    calls = []

    def nudged(self):  # every time it is asked, the first observer answers one ulp higher
        scale, zero_point = original(self)
        calls.append(id(self))
        if id(self) == calls[0]:
            scale = torch.nextafter(scale, torch.full_like(scale, float("inf")))
        return scale, zero_point

    monkeypatch.setattr(HistogramObserver, "calculate_qparams", nudged)
    other = build_in_process([*QUICK, "name=nudged"], tmp_path / "other").artifact
    assert calls, "no activation observer was asked for its scale"
    shutil.copytree(other.path, store / "artifacts" / "nudged" / "v1")
    res = diff(store, "digits_cnn/v1", "nudged/v1", "--json")
    result = json.loads(res.stdout)
    assert res.returncode == 1 and result["verdict"] == "equivalent", result
    change = result["largest_qparam_change"]
    assert 0 < change["relative"] < 1e-6 and change["tensor"]  # one float32 ulp is 6e-8 to 1.2e-7
    assert result["outputs"]["compared"] and result["outputs"]["max_lsb"] <= 1
