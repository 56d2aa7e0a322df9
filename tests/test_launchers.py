"""Sweeps through Hydra's own launchers: joblib (parallel jobs on one machine, two sweeps
writing into one store at once) and Ray (a real local Ray cluster started by the test)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest
from conftest import BIN, csv_rows, manifest, run_cli

# Small builds: these tests are about processes and the store, not about the model.
QUICK = ["calibration.num_samples=16", "evaluation.num_samples=32", "evaluation.tosa_samples=4"]


def _summary_rows(sweep_dir):
    return csv_rows(sweep_dir / "summary.csv")


def _store_is_consistent(root):
    """Every artifact's files match its manifest, versions count up from 1 without gaps, and
    no build key is stored twice."""
    res = run_cli(["--root", str(root), "ls", "--check", "--json"], root.parent, tool="ethosu-artifacts")
    assert res.returncode == 0, res.stdout + res.stderr
    base = root / "artifacts" / "digits_cnn"
    versions = sorted(int(p.name[1:]) for p in base.iterdir() if p.name.startswith("v"))
    assert versions == list(range(1, len(versions) + 1))
    keys = [manifest(base / f"v{v}")["build_key"] for v in versions]
    assert len(set(keys)) == len(keys)
    assert not list(base.glob(".staging-*"))
    return {manifest(base / f"v{v}")["config"]["target"]["accelerator"] for v in versions}


@pytest.mark.slow
def test_two_joblib_sweeps_into_one_store_at_once(tmp_path):
    root = tmp_path / "store"
    procs = []
    for name, targets in (("a", "ethos-u55-128,ethos-u85-256"), ("b", "ethos-u55-128,ethos-u65-256")):
        args = [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"store.root={root}",
            f"hydra.sweep.dir={tmp_path / name}",
            f"target={targets}",
            *QUICK,
        ]
        procs.append(
            subprocess.Popen(
                [str(BIN / "ethosu-build"), *args],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    # the workers stopped at the end leave nothing behind for the resource tracker to report
    assert not any("leaked" in o for o in outs), "\n".join(o[-2000:] for o in outs)
    # three distinct configurations, each stored once, whichever sweep got there first
    assert _store_is_consistent(root) == {"ethos-u55-128", "ethos-u65-256", "ethos-u85-256"}
    for name in ("a", "b"):
        rows = _summary_rows(tmp_path / name)
        assert len(rows) == 2 and all(r["status"] in ("built", "reused", "up_to_date") for r in rows)
    # the shared configuration was computed once: one of the two u55-128 jobs built it
    u55 = [r for name in ("a", "b") for r in _summary_rows(tmp_path / name) if r["target"] == "ethos-u55-128"]
    assert sorted(r["status"] for r in u55)[0] == "built" and len({r["artifact"] for r in u55}) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_cluster():
    """A real single-node Ray cluster (`ray start --head`), stopped afterwards."""
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.fail("ray is not installed: pip install -e '.[test]' installs hydra-ray-launcher and ray")
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_launcher_runs_a_sweep_on_a_local_cluster(tmp_path, ray_cluster):
    root = tmp_path / "store"  # absolute: Ray workers do not start in the launch folder
    args = [
        "-m",
        "hydra/launcher=ray_cluster",
        f"hydra.launcher.ray.init.address={ray_cluster}",
        f"store.root={root}",
        "target=ethos-u55-128,ethos-u65-256",
        *QUICK,
    ]
    proc = subprocess.Popen(
        [str(BIN / "ethosu-build"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-4000:]
    assert "Ray Launcher is launching 2 jobs" in out
    assert _store_is_consistent(root) == {"ethos-u55-128", "ethos-u65-256"}
    (sweep,) = list((root / "sweeps").glob("*/*"))
    rows = _summary_rows(sweep)
    assert [r["status"] for r in rows] == ["built", "built"]
    # the jobs ran in Ray's worker processes, not in the process that launched the sweep
    pids = {json.loads((sweep / r["job"] / "result.json").read_text())["pid"] for r in rows}
    assert proc.pid not in pids
