"""The wheel carries its configs and weights: installed into a new virtual environment, it
builds the default recipe from an empty folder, far from this checkout."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, manifest


@pytest.mark.slow
def test_wheel_in_a_new_venv_builds_the_default_recipe(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = dist.glob("ethosu_build-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    new_site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies (torch, executorch, ...) come from this environment by path, so the test
    # needs no second 1 GB install; a plain path entry does not run this environment's .pth
    # files, so the editable install of the checkout stays out of sight.
    Path(new_site, "deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )

    where = subprocess.run(
        [str(py), "-c", "import ethosu_build; print(ethosu_build.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    # the optimizing sweeper travels in the wheel, where Hydra looks for plugins
    plugin = subprocess.run(
        [str(py), "-c", "from hydra_plugins.ethosu_build_sweeper import optimize_sweeper as m; print(m.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert plugin.stdout.strip().startswith(str(venv)), plugin.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    res = subprocess.run([str(venv / "bin" / "ethosu-build")], cwd=empty, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    m = manifest(empty / "outputs" / "artifacts" / "digits_cnn" / "v1")
    assert m["tools"]["ethosu-build"]
    assert (empty / "outputs" / "artifacts" / "digits_cnn" / "v1" / "model.pte").stat().st_size == m["files"][
        "model.pte"
    ]["size"]
