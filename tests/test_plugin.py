"""A third-party plugin, installed with pip, is listed and evaluated with no change to initbench."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, cli_env

PLUGIN = REPO / "examples" / "initbench-example-plugin"


@pytest.fixture(scope="module")
def installed_plugin():
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", str(PLUGIN)], check=True,
                   capture_output=True)
    yield
    subprocess.run(pip + ["uninstall", "-y", "initbench-example-plugin"], check=True, capture_output=True)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "initbench.cli", *args], capture_output=True, text=True,
                          env=cli_env())


def test_example_plugin_is_listed_and_runs_end_to_end(installed_plugin, tmp_path):
    listed = _cli("methods")
    assert listed.returncode == 0
    line = next(l for l in listed.stdout.splitlines() if "example-pca" in l)
    assert "initbench-example-plugin 0.1.0" in line and "top-r eigenvectors" in line

    out = tmp_path / "runs"
    run = _cli("evaluate", "--suite", "smoke", "--method", "example-pca", "--seeds", "0", "--out", str(out))
    assert run.returncode == 0, run.stderr
    from initbench.results import read_results

    rows = read_results(out).to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and {r["method"] for r in rows} == {"example-pca"}
    assert all(r["method_version"] == "0.1.0" for r in rows)
    # the plugin asked for activation statistics: the whole allowance was spent and recorded
    assert all(r["calibration_examples"] == 8 and r["calibration_forward_passes"] == 2 for r in rows)
