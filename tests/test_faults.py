"""Whatever happens to the process, the store stays consistent: killed builds leave no
version and no cache entry that reads as valid, and never block the next build; two identical
builds at once end with exactly one version."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import BIN, assert_store_consistent, run_cli

from ethosu_build.store.artifacts import ArtifactStore


@pytest.mark.slow  # 9-18 s of end-to-end work: -m 'not slow' stays short for iterating
@pytest.mark.parametrize("moment", ["quantize: running", "lower: running", "vela: done"])
def test_a_build_killed_at_any_moment_leaves_a_consistent_store(moment, tmp_path):
    proc = subprocess.Popen(
        [str(BIN / "ethosu-build"), "store.root=store"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "ETHOSU_BUILD_WARM": "off"},  # the build process itself is killed (see test_warm.py)
    )
    for line in proc.stdout:
        if moment in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert_store_consistent(tmp_path / "store")
    # the next build is not blocked by a stale lock and ends with one good version
    again = run_cli(["store.root=store"], tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [a.version for a in ArtifactStore(tmp_path / "store").versions("digits_cnn")] == [1]
    assert_store_consistent(tmp_path / "store")


def test_two_identical_builds_at_once_make_one_version(tmp_path):
    cmd = [str(BIN / "ethosu-build"), "store.root=store", "calibration.num_samples=16"]
    procs = [
        subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    versions = ArtifactStore(tmp_path / "store").versions("digits_cnn")
    assert [a.version for a in versions] == [1]
    assert_store_consistent(tmp_path / "store")
