"""A real Hydra multirun: every configuration builds its own version; a configuration Vela
rejects fails alone, the others are still built, and the sweep exits non-zero."""

from __future__ import annotations

from conftest import manifest, run_cli


def test_multirun_builds_each_configuration(tmp_path):
    res = run_cli(["-m", "target=ethos-u55-128,ethos-u85-256", "calibration.num_samples=32"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    base = tmp_path / "outputs" / "artifacts" / "digits_cnn"
    targets = sorted(manifest(base / v)["config"]["target"]["accelerator"] for v in ("v1", "v2"))
    assert targets == ["ethos-u55-128", "ethos-u85-256"]
    # the second target reused the first one's export (same process, same cache)
    assert manifest(base / "v2")["stages"]["export"]["status"] == "cached"


def test_failed_configuration_does_not_stop_the_sweep(user_repo):
    res = run_cli(["-m", "hydra.searchpath=[file://conf]", "model=upsampler", "target=ethos-u55-128", "quantization=a16w8,int8", "store.root=store"], user_repo)
    assert res.returncode == 1
    assert "a16w8" in res.stderr and "build failed" in res.stderr
    built = sorted(p.name for p in (user_repo / "store" / "artifacts" / "upsampler").iterdir() if p.name.startswith("v"))
    assert built == ["v1"]
    assert manifest(user_repo / "store" / "artifacts" / "upsampler" / "v1")["config"]["quantization"]["scheme"] == "int8"
