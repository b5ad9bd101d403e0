"""A third-party plugin, installed with pip, is listed and evaluated with no change to initbench."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli_env, quick_smoke_suite

from initbench.api import InitMethod
from initbench.run.harness import run_one
from initbench.selection.counted import read_results

PLUGIN = REPO / "examples" / "initbench-example-plugin"


@pytest.fixture(scope="module")
def installed_plugin():
    import importlib.util

    if importlib.util.find_spec("wheel") is None and importlib.util.find_spec("setuptools._vendor.wheel") is None:
        pytest.skip(
            "this environment cannot build a wheel offline (setuptools < 70.1 without the `wheel` package, "
            "as in a fresh `python -m venv`): pip install wheel, or setuptools >= 70.1"
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", str(PLUGIN)], check=True, capture_output=True)
    yield
    subprocess.run(pip + ["uninstall", "-y", "initbench-example-plugin"], check=True, capture_output=True)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "initbench.cli", *args], capture_output=True, text=True, env=cli_env())


def test_example_plugin_is_listed_and_runs_end_to_end(installed_plugin, tmp_path):
    listed = _cli("methods")
    assert listed.returncode == 0
    line = next(text for text in listed.stdout.splitlines() if "example-pca" in text)
    assert "initbench-example-plugin 0.1.0" in line and "top-r eigenvectors" in line

    out = tmp_path / "runs"
    run = _cli("evaluate", "--suite", "smoke", "--method", "example-pca", "--seeds", "0", "--out", str(out))
    assert run.returncode == 0, run.stderr
    from initbench.selection.counted import read_results

    rows = read_results(out).to_pylist()
    assert {r["status"] for r in rows} == {"ok"} and {r["method"] for r in rows} == {"example-pca"}
    assert all(r["method_version"] == "0.1.0" for r in rows)
    # the plugin asked for activation statistics: the whole allowance was spent and recorded
    assert all(r["calibration_examples"] == 8 and r["calibration_forward_passes"] == 2 for r in rows)


class OldSignatureOptimizer(InitMethod):
    """A plugin written against the old docs: ``build_optimizer(model, lr)``, without ``spec``."""

    summary = "test only: build_optimizer with the wrong signature"

    def build_optimizer(self, model, lr):
        return None


class OldSignatureAlpha(InitMethod):
    """A plugin whose alpha convention misses the ``family`` argument."""

    def paper_alpha(self, rank):
        return rank


@pytest.mark.parametrize("cls, hook", [(OldSignatureOptimizer, "build_optimizer"), (OldSignatureAlpha, "paper_alpha")])
def test_an_error_in_a_plugin_hook_names_the_plugin_and_the_hook(smoke_suite, tmp_path, monkeypatch, capsys, cls, hook):
    method = cls()
    method.name = "old-signature"
    task = smoke_suite.tasks[0]
    outcome = run_one(smoke_suite, method, task, 0, tmp_path)
    expected = f"method 'old-signature' ({cls.__module__}:{cls.__name__}) raised in {hook}: TypeError: "
    assert outcome.status == "failed" and outcome.error.startswith(expected), outcome.error
    assert "positional argument" in outcome.error
    assert read_results(tmp_path).column("error").to_pylist() == [outcome.error]
    assert "Traceback" not in capsys.readouterr().err  # kept behind the debug switch

    monkeypatch.setenv("INITBENCH_DEBUG", "1")
    assert run_one(smoke_suite, method, task, 0, tmp_path, force=True).error == outcome.error
    err = capsys.readouterr().err
    assert "Traceback" in err and "TypeError" in err and "MethodFailure" in err


def test_the_cli_names_the_failing_plugin_hook_and_how_to_get_its_traceback(tmp_path):
    name = f"{Path(__file__).stem}:OldSignatureOptimizer"  # by import path, from this file
    env = {**cli_env(), "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    suite = quick_smoke_suite(tmp_path)
    quiet = subprocess.run(
        [
            sys.executable,
            "-m",
            "initbench.cli",
            "evaluate",
            "--suite",
            str(suite),
            "--method",
            name,
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert quiet.returncode == 1
    line = next(text for text in quiet.stderr.splitlines() if text.startswith("initbench: run failed:"))
    assert f"method '{name}' ({name}) raised in build_optimizer: TypeError:" in line
    assert "Traceback" not in quiet.stderr and "INITBENCH_DEBUG=1 prints each failed run's traceback" in quiet.stderr
