"""Sweeps on every executor: a 4-run grid with one run killed by SIGKILL lands the other three,
records the crash with its reason, and a rerun completes only the crashed run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, cli_env, quick_smoke_suite
from sweep_methods import MARKER

from initbench.method.registry import get_method
from initbench.selection.status import grid_status, render_status
from initbench.spec.suite import load_suite
from initbench.sweeps.executors import LocalExecutor, RayExecutor, SlurmExecutor
from initbench.sweeps.sweep import RunSpec, grid, run_sweep

CRASHER = "tests.sweep_methods:CrashOnMarkedSeed"


@pytest.fixture
def crash_env(tmp_path, monkeypatch):
    """Workers can import the crashing method, and it crashes while the marker exists."""
    marker = tmp_path / "crash-now"
    marker.touch()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(MARKER, str(marker))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return marker


def _results_mtimes(out):
    return {p: p.stat().st_mtime_ns for p in out.rglob("*.results.parquet")}


def _sweep_twice(tmp_path, marker, executor, expected_error):
    suite = load_suite(str(quick_smoke_suite(tmp_path)))
    methods = [get_method("lora"), get_method(CRASHER)]
    out = tmp_path / "runs"
    lines: list[str] = []
    first = run_sweep(suite, methods, [0, 1], out, executor, report=lines.append)
    by_key = {(o.method, o.seed): o for o in first}
    assert len(first) == 4
    crashed = by_key[(CRASHER, 1)]
    assert crashed.status == "failed" and expected_error in crashed.error, crashed
    assert all(o.status == "ok" for k, o in by_key.items() if k != (CRASHER, 1))
    status = grid_status(out)
    assert status.counts[(suite.name, "lora")]["done"] == 2
    assert status.counts[(suite.name, CRASHER)]["failed"] == 1 and not status.missing
    assert crashed.error in render_status(status)

    marker.unlink()
    before = _results_mtimes(out)
    lines.clear()
    second = run_sweep(suite, methods, [0, 1], out, executor, report=lines.append)
    assert [o.status for o in second].count("skipped") == 3
    assert {(o.method, o.seed, o.status) for o in second if o.status != "skipped"} == {(CRASHER, 1, "ok")}
    after = _results_mtimes(out)
    changed = [p for p in after if before.get(p) != after[p]]
    assert len(changed) == 1 and "seed1" in changed[0].name and "sweep_methods" in str(changed[0])
    assert grid_status(out).complete
    return lines


@pytest.mark.slow
def test_local_executor_survives_a_killed_run(tmp_path, crash_env):
    _sweep_twice(tmp_path, crash_env, LocalExecutor(), "worker process killed by SIGKILL")


@pytest.mark.slow
def test_ray_executor_on_a_local_two_cpu_cluster(tmp_path, crash_env):
    ray = pytest.importorskip("ray")
    # one cluster for both sweeps (as with --address): its worker processes, and the modules they
    # imported, serve the rerun too; the executor leaves a cluster it did not start running
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        _sweep_twice(tmp_path, crash_env, RayExecutor(), "ray: ")
        assert ray.is_initialized()
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_slurm_executor_through_submitit_local(tmp_path, crash_env):
    pytest.importorskip("submitit")
    _sweep_twice(
        tmp_path, crash_env, SlurmExecutor(tmp_path / "submitit", cluster="local", cpus_per_run=1), "submitit job "
    )


def test_tuned_grid_has_trials_then_finals_and_status_awaits_selection(tmp_path, smoke_suite):
    methods = [get_method("base"), get_method("lora")]
    specs = grid(smoke_suite, methods, [0, 1], tmp_path, protocol="tuned")
    trials = [s for s in specs if s.split == "validation"]
    n_tasks, n_grid = len(smoke_suite.tasks), len(smoke_suite.tuning.lr_grid) * len(smoke_suite.tuning.seeds)
    assert len(trials) == n_tasks * n_grid and {s.method for s in trials} == {"lora"}  # base has nothing to tune
    assert len(specs) - len(trials) == 2 * n_tasks * 2
    assert RunSpec.from_json(specs[0].to_json()) == specs[0]
    from initbench.sweeps.sweep import write_plan

    write_plan(smoke_suite, methods, [0, 1], tmp_path, "tuned", None)
    status = grid_status(tmp_path)
    expected = len(specs) + n_tasks * 2  # plus the tuned finals, missing until their selection exists
    assert len(status.missing) == expected and any("awaiting selection" in m for m in status.missing)


@pytest.mark.slow
def test_cli_sweep_and_status(tmp_path, crash_env):
    suite = quick_smoke_suite(tmp_path)
    out = tmp_path / "runs"
    command = [
        sys.executable,
        "-m",
        "initbench.cli",
        "sweep",
        "--suite",
        str(suite),
        "--method",
        "lora",
        "--method",
        CRASHER,
        "--seeds",
        "0,1",
        "--out",
        str(out),
    ]
    first = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=600)
    assert first.returncode == 1, first.stderr[-2000:]
    assert (
        "run failed: tests.sweep_methods:CrashOnMarkedSeed | addition | seed 1: worker process killed by SIGKILL"
        in first.stderr
    )
    status = subprocess.run(
        [sys.executable, "-m", "initbench.cli", "status", str(out)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert status.returncode == 1 and "SIGKILL" in status.stdout
    assert "| smoke   | lora " in status.stdout or "| smoke | lora " in status.stdout


@pytest.fixture
def decoy_folder(tmp_path, monkeypatch):
    """The sweep starts from a folder holding a checkout-like ``initbench`` that raises on import, as a
    clone of the repository next to the user's work would; workers must import the installed package."""
    start = tmp_path / "start"
    (start / "initbench").mkdir(parents=True)
    (start / "initbench" / "__init__.py").write_text("raise ImportError('the decoy initbench was imported')\n")
    monkeypatch.chdir(start)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return start


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray", "slurm"])
def test_workers_import_the_installed_initbench_not_a_folder_in_the_working_folder(tmp_path, decoy_folder, executor):
    if executor == "ray":
        pytest.importorskip("ray")
        chosen = RayExecutor(num_cpus=1)
    elif executor == "slurm":
        pytest.importorskip("submitit")
        chosen = SlurmExecutor(tmp_path / "submitit", cluster="local", cpus_per_run=1)
    else:
        chosen = LocalExecutor()
    suite = load_suite(str(quick_smoke_suite(tmp_path)))
    outcomes = run_sweep(suite, [get_method("lora")], [0], tmp_path / "runs", chosen, report=lambda line: None)
    assert [(o.status, o.error) for o in outcomes] == [("ok", "")]


def test_the_python_310_worker_command_drops_the_working_folder(decoy_folder):
    from initbench.sweeps.executors import _SAFE_MAIN_310

    # no RunSpec: main fails on its argument, after importing the installed initbench.sweeps.sweep
    done = subprocess.run(
        [sys.executable, "-c", _SAFE_MAIN_310, "not json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "JSONDecodeError" in done.stderr and "decoy" not in done.stderr, done.stderr
