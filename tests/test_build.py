"""Real builds (ExecuTorch + Vela) of the digits CNN: artifacts, versions, reuse, overrides."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import build_in_process, manifest, run_cli

from ethosu_build.fingerprint import file_sha256
from ethosu_build.store.cache import StageCache


def pte_sha(result) -> str:
    return file_sha256(result.artifact.path / "model.pte")


def test_default_build_from_the_cli_then_up_to_date(tmp_path):
    first = run_cli([], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    v1 = tmp_path / "outputs" / "artifacts" / "digits_cnn" / "v1"
    m = manifest(v1)
    assert m["files"]["model.pte"]["sha256"] == file_sha256(v1 / "model.pte")
    assert m["files"]["config.yaml"]["sha256"] == file_sha256(v1 / "config.yaml")
    assert m["name"] == "digits_cnn" and m["version"] == 1
    assert m["config"]["target"]["accelerator"] == "ethos-u55-128"
    assert {s["status"] for s in m["stages"].values()} == {"ran"}
    assert m["delegation"]["npu_partitions"] >= 1
    before = (v1 / "model.pte").read_bytes()

    # Rebuild with nothing changed: same version, no stage, no executorch (nor torch) import.
    probe = (
        "import sys; from ethosu_build.app import main\n"
        "sys.argv = ['ethosu-build']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('IMPORTED', 'executorch' in sys.modules, 'torch' in sys.modules)\n"
    )
    again = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "up to date: digits_cnn/v1" in again.stderr + again.stdout
    assert "IMPORTED False False" in again.stdout
    assert sorted(p.name for p in (v1.parent).iterdir() if p.name.startswith("v")) == ["v1"]
    assert (v1 / "model.pte").read_bytes() == before


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_targets_of_one_tosa_spec_share_the_lowering_and_get_the_bytes_of_a_fresh_build(tmp_path):
    build_in_process(["target=ethos-u55-128"], tmp_path / "a")
    reused = build_in_process(["target=ethos-u55-256"], tmp_path / "a")
    assert reused.stages["lower"]["status"] == "cached" and reused.stages["vela"]["status"] == "ran"
    assert "quantize" not in reused.stages and "export" not in reused.stages  # nothing before a cached stage runs
    assert reused.artifact.version == 2  # same name, different build: next version
    fresh = build_in_process(["target=ethos-u55-256"], tmp_path / "b")
    assert fresh.stages["lower"]["status"] == "ran"
    assert pte_sha(reused) == pte_sha(fresh)


def test_a_corrupt_cache_entry_is_rebuilt_not_used(tmp_path):
    first = build_in_process([], tmp_path)
    for stage, name in (("lower", "template.pte"), ("vela", "model.pte")):
        key = first.stages[stage]["key"]
        (StageCache(tmp_path).path(key) / name).write_bytes(b"garbage")
    again = build_in_process(["name=again"], tmp_path)
    assert again.stages["lower"]["status"] == "ran" and again.stages["vela"]["status"] == "ran"
    assert pte_sha(again) == pte_sha(first)


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_a16w8_block_override_changes_the_program_and_is_reported(shared_root):
    plain = build_in_process([], shared_root)
    mixed = build_in_process(["+overrides.b1={module_name: blocks.1, scheme: a16w8}"], shared_root)
    assert pte_sha(plain) != pte_sha(mixed)
    assert mixed.artifact.name == plain.artifact.name and mixed.artifact.version != plain.artifact.version
    q = mixed.artifact.manifest()["quantization"]
    assert q["overrides"] == [
        {
            "name": "b1",
            "selector": "module_name=blocks.1",
            "scheme": "a16w8",
            "observer": None,  # the global one
            "ops_selected": q["overrides"][0]["ops_selected"],
        }
    ]
    assert q["overrides"][0]["ops_selected"] > 0
    modules = q["applied"]["modules"]
    assert modules and all((s == "a16w8") == m.startswith("blocks.1.") for m, s in modules.items() if m != "<top>")
    assert plain.artifact.manifest()["quantization"]["applied"]["ops_by_scheme"].get("a16w8", 0) == 0


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_float_override_leaves_its_ops_on_the_cpu(shared_root):
    plain = build_in_process([], shared_root).artifact.manifest()
    m = build_in_process(["overrides=head_float"], shared_root).artifact.manifest()
    assert m["quantization"]["applied"]["modules"]["head"] == "float"
    on_cpu = [op for op in m["delegation"]["cpu_ops"] if op["module"] == "head"]
    assert on_cpu, m["delegation"]
    assert not [op for op in plain["delegation"]["cpu_ops"] if op["module"] == "head"]
    assert m["delegation"]["cpu_op_count"] > plain["delegation"]["cpu_op_count"]


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
def test_module_type_override_and_later_override_wins(shared_root):
    by_type = build_in_process(["overrides=linear_a16w8"], shared_root).artifact.manifest()
    assert by_type["quantization"]["applied"]["modules"]["head"] == "a16w8"
    # linear_a16w8 first, head_float second: the later entry wins on `head`
    both = build_in_process(["overrides=[linear_a16w8,head_float]"], shared_root).artifact.manifest()
    assert both["quantization"]["applied"]["modules"]["head"] == "float"
    reverse = build_in_process(["overrides=[head_float,linear_a16w8]"], shared_root).artifact.manifest()
    assert reverse["quantization"]["applied"]["modules"]["head"] == "a16w8"


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_uint8_io_and_per_tensor_are_distinct_programs(shared_root):
    shas = {
        q: pte_sha(build_in_process([f"quantization={q}"], shared_root))
        for q in ("int8", "int8_per_tensor", "uint8_io")
    }
    assert len(set(shas.values())) == 3


def test_batched_calibration_is_recorded(shared_root):
    m = build_in_process(["calibration.num_samples=100", "calibration.batch_size=32"], shared_root).artifact.manifest()
    cal = m["quantization"]["calibration"]
    assert cal == {"samples": 100, "batch_size": 32, "calls": 4, "batched": True, "unbatched_reason": None}


def test_stored_config_is_the_resolved_config(shared_root):
    import yaml

    r = build_in_process(["calibration.num_samples=64"], shared_root)
    stored = yaml.safe_load((r.artifact.path / "config.yaml").read_text())
    assert stored == r.artifact.manifest()["config"]
    assert stored["calibration"]["num_samples"] == 64 and stored["name"] == "digits_cnn"


def test_artifacts_cli_lists_and_shows(shared_root):
    built = build_in_process([], shared_root).artifact
    ls = run_cli(["--root", str(shared_root), "ls", "--json"], shared_root, tool="ethosu-artifacts")
    assert ls.returncode == 0, ls.stderr
    rows = json.loads(ls.stdout)
    assert built.id in [r["id"] for r in rows]
    assert [r["created"] for r in rows] == sorted((r["created"] for r in rows), reverse=True)
    other = run_cli(
        ["--root", str(shared_root), "ls", "--json", "--target", "ethos-u85-2048"], shared_root, tool="ethosu-artifacts"
    )
    assert json.loads(other.stdout) == []
    show = run_cli(
        ["--root", str(shared_root), "show", built.id], shared_root, tool="ethosu-artifacts", env={"COLUMNS": "200"}
    )
    assert show.returncode == 0, show.stderr
    assert built.manifest()["build_key"][:16] in show.stdout
    as_json = run_cli(
        ["--root", str(shared_root), "show", str(built.path), "--json"], shared_root, tool="ethosu-artifacts"
    )
    assert json.loads(as_json.stdout) == built.manifest()
    missing = run_cli(["--root", str(shared_root), "show", "nope/v9"], shared_root, tool="ethosu-artifacts")
    assert missing.returncode == 2 and "no artifact 'nope/v9'" in missing.stderr


@pytest.mark.slow  # kept out of the iteration loop (-m "not slow"); CI runs it
def test_a_new_process_reuses_the_cached_calibration(tmp_path):
    """The quantized program written by one process loads in another (its quantized ops
    must be registered before the cache entry is read)."""
    assert run_cli(["calibration.num_samples=16"], tmp_path).returncode == 0
    # same calibration, another lowering (CPU-side kernels): the quantized program is loaded
    second = run_cli(["target.cpu_qdq_kernels=portable", "calibration.num_samples=16"], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    m = manifest(tmp_path / "outputs" / "artifacts" / "digits_cnn" / "v2")
    assert m["stages"]["quantize"]["status"] == "cached" and m["stages"]["lower"]["status"] == "ran"


def test_a_run_validates_its_config_once(store_copy, monkeypatch):
    """The pre-run check validates the composed config before Hydra makes the run dir; the
    build takes that config as it is (app.py, sweep.RunState.checked) rather than checking
    it again. In process, as the warm service runs it: an up-to-date build of the store's
    digits_cnn/v1."""
    import signal

    from conftest import FEW_EVALUATED

    from ethosu_build import app
    from ethosu_build.pipeline import build as build_module

    calls = []
    real = app.validate
    monkeypatch.setattr(app, "validate", lambda *a, **k: calls.append("pre-run check") or real(*a, **k))
    monkeypatch.setattr(build_module, "validate", lambda *a, **k: calls.append("build") or real(*a, **k))
    argv = ["ethosu-build", f"store.root={store_copy}", "calibration.num_samples=16", *FEW_EVALUATED]
    monkeypatch.setattr(sys, "argv", argv)
    handler = signal.getsignal(signal.SIGINT)
    try:
        app.main()
    finally:
        signal.signal(signal.SIGINT, handler)
    assert calls == ["pre-run check"]
    assert sorted(p.name for p in (store_copy / "artifacts" / "digits_cnn").iterdir() if p.name.startswith("v")) == [
        "v1"
    ]  # up to date: nothing new was built
