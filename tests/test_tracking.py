"""Tracking in MLflow: a sweep against a real tracking server (a subprocess on 127.0.0.1) read
back through MLflow's client, the embedded default on a fresh tracking store, an unreachable
server that leaves the build as it was, `ethosu-artifacts track`, and the missing extra."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import BIN, compose_config, manifest, run_cli

from ethosu_build import tracking
from ethosu_build.config.validate import validate
from ethosu_build.errors import ConfigError

QUICK = ["calibration.num_samples=16", "evaluation.num_samples=32", "evaluation.tosa_samples=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", (tmp_path / "server-artifacts").as_uri()],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert server.poll() is None and time.time() < deadline, "mlflow server did not start"
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_a_sweep_on_a_real_server_the_embedded_store_and_an_unreachable_server(mlflow_server, tmp_path):
    """One store for three trackers: a sweep (a parent run, a child per job) on a real server;
    then the embedded default; then a server nobody answers at, which only warns."""
    from mlflow.tracking import MlflowClient

    res = run_cli(
        ["-m", "tracking=mlflow", f"tracking.uri={mlflow_server}", "quantization=int8,a16w8",
         "budget.max_sram_kib=6", "store.root=store", *QUICK],
        tmp_path,
    )  # fmt: skip
    assert res.returncode == 3, res.stderr[-3000:]  # a16w8 breaches the SRAM budget: one failed job
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("digits_cnn")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 == len(runs) - 1
    by_status = {r.data.tags["ethosu_build.status"]: r for r in children}
    assert set(by_status) == {"built", "budget"}
    built, breached = by_status["built"], by_status["budget"]
    assert (built.info.status, breached.info.status) == ("FINISHED", "FAILED")
    assert "max_sram_kib" in breached.data.tags["ethosu_build.error"]
    assert breached.data.metrics["sram_kib"] > 6  # what the breached build measured

    m = manifest(tmp_path / "store" / "artifacts" / built.data.tags["ethosu_build.artifact"])
    assert built.data.metrics == tracking.metrics(m)  # every metric equals the manifest's
    assert built.data.metrics["inference_ms"] == m["metrics"]["vela"]["total"]["inference_ms"]
    assert built.data.tags["ethosu_build.build_key"] == m["build_key"]
    assert built.data.tags["tool.executorch"] == m["tools"]["executorch"]
    assert built.data.params["choice.quantization"] == "int8" and built.data.params["override.quantization"] == "int8"
    names = {a.path for a in client.list_artifacts(built.info.run_id)}
    assert {"report.md", "manifest.json", "config.yaml", "model.pte", "vela"} <= names
    pte = client.download_artifacts(built.info.run_id, "model.pte", str(tmp_path / "dl"))
    assert (
        Path(pte).read_bytes()
        == (tmp_path / "store" / "artifacts" / m["name"] / f"v{m['version']}" / "model.pte").read_bytes()
    )
    assert {"summary.csv", "summary.md"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert "1 failed" in parent.data.tags["ethosu_build.summary"]

    # The embedded default, no server: a fresh tracking store under store.root. The int8 build
    # is stored (up to date); the embedded store has no run of it yet, so it gets one, once.
    one = ["tracking=mlflow", "quantization=int8", "budget.max_sram_kib=6", "store.root=store", *QUICK]
    first = run_cli(one, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'store' / 'tracking' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("digits_cnn").experiment_id])
    assert run.data.tags["ethosu_build.artifact"] == built.data.tags["ethosu_build.artifact"]
    again = run_cli(one, tmp_path)  # up to date again: its run is found, not made twice
    assert again.returncode == 0 and f"already tracked as run {run.info.run_id}" in again.stdout + again.stderr
    track = run_cli(
        ["--root", "store", "track", run.data.tags["ethosu_build.artifact"]], tmp_path, tool="ethosu-artifacts"
    )
    assert track.returncode == 0 and run.info.run_id in track.stdout
    assert len(client.search_runs([run.info.experiment_id])) == 1

    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.time()
    offline = run_cli([*one, f"tracking.uri={closed}", "name=offline"], tmp_path)  # a new artifact, stages cached
    assert offline.returncode == 0, offline.stderr[-3000:]
    said = offline.stdout + offline.stderr
    assert "tracking: logging the run failed" in said and "unaffected" in said
    assert (tmp_path / "store" / "artifacts" / "offline" / "v1" / "model.pte").is_file()
    assert time.time() - t0 < 120
    refused = run_cli(["--root", "store", "track", "offline/v1", "--uri", closed], tmp_path, tool="ethosu-artifacts")
    assert refused.returncode == 1 and "tracking failed" in refused.stderr


def test_tracking_without_mlflow_installed_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["tracking=mlflow", f"store.root={tmp_path}"])[0])
    assert "tracking" in e.value.render() and "[tracking]" in e.value.render()
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["tracking.backend=wandb", f"store.root={tmp_path}"])[0])
    assert "tracking.backend" in e.value.render() and "mlflow" in e.value.render()
